"""Reading and writing image files with clear errors (never a crash on a bad file).

Image files are read as viewers show them: the EXIF orientation (how phones store portrait photos) is
applied, so a 600x400 JPEG tagged "rotate 90" becomes a 400x600 image.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .errors import WpsSamError
from .io_utils import atomic_path

MAX_IMAGE_PIXELS = 100_000_000  # refuse decompression bombs before they take the machine's memory
EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientation (2..8) -> the array operation that shows the stored pixels upright (PIL's exif_transpose)
ORIENTATION_TRANSFORMS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored vertically
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise (a phone held upright)
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),  # transversed
    8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise
}


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1..8) of an encoded image; 1 (upright as stored) when it has none."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read
            with Image.open(io.BytesIO(data)) as image:
                value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 1  # OpenCV decoded it; an EXIF block PIL cannot read is no orientation
    return value if value in ORIENTATION_TRANSFORMS else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels (HxW or HxWxC) -> the image as viewers show it under EXIF `orientation`."""
    transform = ORIENTATION_TRANSFORMS.get(orientation)
    return np.ascontiguousarray(transform(image)) if transform else image


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (grayscale and alpha converted, EXIF orientation applied)."""
    path = Path(path)
    if path.is_dir():
        raise WpsSamError(f"{path} is a directory, not an image file")
    if not path.is_file():
        raise WpsSamError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise WpsSamError(f"image file is empty: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    header = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if header is None:
        raise WpsSamError(f"cannot decode image (truncated or not an image): {path}")
    image = header
    if image.size > MAX_IMAGE_PIXELS * 4:
        raise WpsSamError(f"image too large ({image.shape}): {path}")
    if image.dtype != np.uint8:
        raise WpsSamError(
            f"{path}: {image.dtype} image ({image.dtype.itemsize * 8}-bit); the model takes 8-bit images — "
            f"convert it first (e.g. scale to 0..255)"
        )
    image = apply_orientation(image, exif_orientation(data.tobytes()))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_png(path: str | Path, image: np.ndarray, rgb: bool = True) -> Path:
    """Write a PNG atomically; 3-channel images are taken as RGB; uint16 single-channel kept 16-bit."""
    path = Path(path)
    if image.ndim == 3 and rgb:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise WpsSamError(f"could not encode PNG for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path
