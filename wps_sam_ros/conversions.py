"""sensor_msgs/Image and CompressedImage <-> numpy, on duck-typed messages (rclpy, rosbags, Cyclone DDS).

The listed encodings are converted here with numpy, so the result is the same with or without ROS and
no cv_bridge / numpy-2 binary conflict can stop the node. cv_bridge, when it imports, only widens the
set of accepted raw encodings (bayer, yuv422, ...); compressed images are decoded with OpenCV.

Every check failure raises WpsSamError naming the field, so the node can log it and go on.

mono16 rule: 16-bit pixels become 8-bit by dropping the low byte (v >> 8), a fixed scale like
cv_bridge's 16->8 conversion, never a per-frame stretch, so brightness is stable from frame to frame.
8UC3 is taken as BGR (OpenCV's channel order, which is what produces 8UC3 images); 8UC1 as mono8.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from wps_sam_core.errors import WpsSamError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoding:
    channels: int
    bytes_per_channel: int
    to_rgb: int | None  # cv2 colour conversion to RGB; None = already RGB / single channel


ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding(3, 1, None),
    "bgr8": Encoding(3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": Encoding(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": Encoding(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": Encoding(1, 1, None),
    "mono16": Encoding(1, 2, None),
    "8UC1": Encoding(1, 1, None),
    "8UC3": Encoding(3, 1, cv2.COLOR_BGR2RGB),
}
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


def is_compressed(msg: Any) -> bool:
    """CompressedImage has `format` and no `encoding`."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def data_bytes(data: Any) -> np.ndarray:
    """A message's uint8[] field as a flat uint8 array, without a copy where the container allows."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.astype(np.uint8)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)  # bytes, bytearray, memoryview, array.array('B')


def mono16_to_8bit(image: np.ndarray) -> np.ndarray:
    """The documented 16 -> 8 bit rule: keep the high byte (fixed scale, no per-frame stretch)."""
    return (image >> 8).astype(np.uint8)


def image_to_array(msg: Any) -> np.ndarray:
    """Image -> HxW or HxWxC array in its own encoding (uint16 for mono16, native byte order)."""
    enc = ENCODINGS.get(msg.encoding)
    if enc is None:
        raise WpsSamError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 1 or width < 1:
        raise WpsSamError(f"image has no pixels: height={height} width={width}")
    row_bytes = width * enc.channels * enc.bytes_per_channel
    if step < row_bytes:
        raise WpsSamError(f"step {step} < width {width} x {enc.channels * enc.bytes_per_channel} bytes "
                          f"per pixel ({msg.encoding})")
    if step % enc.bytes_per_channel:
        raise WpsSamError(f"step {step} is not a multiple of {enc.bytes_per_channel} ({msg.encoding})")
    buf = data_bytes(msg.data)
    if buf.size != step * height:
        raise WpsSamError(f"data length {buf.size} != step {step} x height {height} = {step * height}")
    rows = buf.reshape(height, step)[:, :row_bytes]
    if enc.bytes_per_channel == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        pixels = np.ascontiguousarray(rows).view(dtype).astype(np.uint16)
    else:
        pixels = rows
    shape = (height, width) if enc.channels == 1 else (height, width, enc.channels)
    return pixels.reshape(shape)


def image_to_rgb(msg: Any) -> np.ndarray:
    """Image -> HxWx3 uint8 RGB (the segmenter's input)."""
    if msg.encoding not in ENCODINGS:
        bridged = _cv_bridge_to_rgb(msg)
        if bridged is not None:
            return bridged
    pixels = image_to_array(msg)
    if pixels.dtype == np.uint16:
        pixels = mono16_to_8bit(pixels)
    enc = ENCODINGS[msg.encoding]
    if enc.channels == 1:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if enc.to_rgb is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), enc.to_rgb)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """CompressedImage (jpeg/png, as image_transport writes them) -> HxWx3 uint8 RGB."""
    fmt = str(msg.format).lower()
    if not any(name in fmt for name in COMPRESSED_FORMATS):
        raise WpsSamError(f"unsupported compressed format {msg.format!r}; supported: jpeg, png")
    buf = data_bytes(msg.data)
    if buf.size == 0:
        raise WpsSamError(f"compressed image ({msg.format}) has no data")
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise WpsSamError(f"could not decode {buf.size} bytes of compressed image data ({msg.format})")
    if decoded.dtype == np.uint16:
        decoded = mono16_to_8bit(decoded)
    if decoded.ndim == 2:
        return np.repeat(decoded[:, :, None], 3, axis=2)
    code = cv2.COLOR_BGRA2RGB if decoded.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(decoded, code)


def message_to_rgb(msg: Any) -> np.ndarray:
    return compressed_to_rgb(msg) if is_compressed(msg) else image_to_rgb(msg)


def array_to_image_fields(pixels: np.ndarray, encoding: str) -> dict[str, Any]:
    """HxW(xC) array -> the Image fields other than header (little-endian; data as bytes)."""
    enc = ENCODINGS[encoding]
    expected_dtype = np.uint16 if enc.bytes_per_channel == 2 else np.uint8
    if pixels.dtype != expected_dtype:
        raise WpsSamError(f"{encoding} needs {np.dtype(expected_dtype)} pixels, got {pixels.dtype}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels != enc.channels:
        raise WpsSamError(f"{encoding} needs {enc.channels} channel(s), got array of shape {pixels.shape}")
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)).tobytes()
    return {"height": height, "width": width, "encoding": encoding, "is_bigendian": 0,
            "step": width * enc.channels * enc.bytes_per_channel, "data": data}


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> tuple[str, bytes]:
    """RGB -> (CompressedImage.format, data) the way image_transport's compressed plugin names it."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ext, params = (".png", []) if fmt == "png" else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise WpsSamError(f"could not encode image as {fmt}")
    return f"rgb8; {fmt} compressed bgr8", buf.tobytes()


_BRIDGE: Any = None


def _cv_bridge_to_rgb(msg: Any) -> np.ndarray | None:
    """Encodings outside ENCODINGS via cv_bridge, if it imports (it may not, e.g. numpy-2 ABI)."""
    global _BRIDGE
    if _BRIDGE is None:
        try:
            from cv_bridge import CvBridge  # optional: only widens the accepted encodings

            _BRIDGE = CvBridge()
        except Exception:  # ImportError, or a binary built against another numpy
            _BRIDGE = False
    if not _BRIDGE:
        return None
    try:
        return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    except Exception as exc:  # cv_bridge raises its own error types for unknown encodings
        raise WpsSamError(f"image encoding {msg.encoding!r} not convertible to rgb8: {exc}") from None


# ---- depth and CameraInfo (parts in 3D) ----------------------------------------------------------------
# The two encodings depth drivers publish (REP 118): 16UC1 in millimetres, 32FC1 in metres; 0 / NaN / inf = no depth.
DEPTH_ENCODINGS: dict[str, tuple[str, float]] = {"16UC1": ("u2", 1000.0), "32FC1": ("f4", 1.0)}  # numpy type, units/m


def depth_to_metres(msg: Any) -> np.ndarray:
    """Depth Image -> HxW float32 metres (native byte order; row padding skipped; no depth stays 0 / NaN / inf)."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise WpsSamError(f"unsupported depth encoding {msg.encoding!r}; supported: 16UC1 (millimetres), 32FC1 (metres)")
    code, units_per_metre = DEPTH_ENCODINGS[msg.encoding]
    itemsize = int(code[1])
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 1 or width < 1:
        raise WpsSamError(f"depth image has no pixels: height={height} width={width}")
    if step < width * itemsize or step % itemsize:
        raise WpsSamError(f"depth image step {step} does not fit width {width} x {itemsize} bytes ({msg.encoding})")
    buf = data_bytes(msg.data)
    if buf.size != step * height:
        raise WpsSamError(f"depth image data length {buf.size} != step {step} x height {height} = {step * height}")
    dtype = np.dtype((">" if msg.is_bigendian else "<") + code)
    rows = np.ascontiguousarray(buf.reshape(height, step)[:, :width * itemsize])
    values = rows.view(dtype).reshape(height, width)
    return values.astype(np.float32) / np.float32(units_per_metre)  # a division: 1234 mm -> the float32 nearest 1.234


def camera_info_to_intrinsics(msg: Any):
    """CameraInfo -> geometry3d.CameraIntrinsics (K, width, height); a zero focal length or size is one line."""
    from wps_sam_core.postprocess.geometry3d import CameraIntrinsics

    try:
        return CameraIntrinsics.from_matrix(list(msg.k), int(msg.width), int(msg.height))
    except WpsSamError as exc:
        raise WpsSamError(f"CameraInfo unusable: {str(exc).removeprefix('camera intrinsics: ')}") from None


def resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest neighbour with pixel centres on pixel centres (u + 0.5 scales), as CameraIntrinsics.scaled assumes;
    depth is never interpolated (a blend of a part and the wall behind it is a point in mid-air)."""
    rows = ((np.arange(height) + 0.5) * image.shape[0] / height).astype(np.intp)
    cols = ((np.arange(width) + 0.5) * image.shape[1] / width).astype(np.intp)
    return image[np.minimum(rows, image.shape[0] - 1)[:, None], np.minimum(cols, image.shape[1] - 1)[None, :]]


def depth_for_image(depth_msg: Any, info_msg: Any, image_shape: tuple[int, int], scale_to_image: bool):
    """(HxW float32 depth in metres, CameraIntrinsics) aligned to an image of `image_shape`; every mismatch is one
    WpsSamError line. CameraInfo must describe the depth image (its K); a depth image of another size than the
    colour image is resized only with `scale_to_image` (K scaled with it)."""
    depth = depth_to_metres(depth_msg)
    intrinsics = camera_info_to_intrinsics(info_msg)
    if (intrinsics.height, intrinsics.width) != depth.shape:
        raise WpsSamError(f"CameraInfo is for {intrinsics.width}x{intrinsics.height} but the depth image is "
                          f"{depth.shape[1]}x{depth.shape[0]} (camera_info_topic of another stream?)")
    if depth.shape != tuple(image_shape):
        if not scale_to_image:
            raise WpsSamError(f"depth image is {depth.shape[1]}x{depth.shape[0]} but the colour image is "
                              f"{image_shape[1]}x{image_shape[0]}; use the depth aligned to the colour image, or "
                              f"depth_scale_to_image: true (nearest neighbour)")
        depth = resize_nearest(depth, *image_shape)
        intrinsics = intrinsics.scaled(image_shape[1], image_shape[0])
    return depth, intrinsics
