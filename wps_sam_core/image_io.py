"""Reading and writing image files with clear errors (never a crash on a bad file)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import WpsSamError
from .io_utils import atomic_path

MAX_IMAGE_PIXELS = 100_000_000  # refuse decompression bombs before they take the machine's memory


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (grayscale and alpha converted)."""
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
