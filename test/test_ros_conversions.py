"""Image / CompressedImage -> RGB for every supported encoding, with pixel checks, and the rejections."""
from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from wps_sam_core.errors import WpsSamError
from wps_sam_ros.conversions import (
    ENCODINGS, array_to_image_fields, compressed_to_rgb, encode_compressed, image_to_array, message_to_rgb,
    mono16_to_8bit,
)

H, W = 5, 7


def rgb_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def image_msg(pixels: np.ndarray, encoding: str, step: int | None = None, bigendian: bool = False, data=None):
    """A duck-typed sensor_msgs/Image (like rclpy's, rosbags' or Cyclone's)."""
    bytes_per_pixel = pixels.dtype.itemsize * (1 if pixels.ndim == 2 else pixels.shape[2])
    row = pixels.shape[1] * bytes_per_pixel
    step = row if step is None else step
    dtype = pixels.dtype.newbyteorder(">" if bigendian else "<")
    rows = pixels.astype(dtype).reshape(pixels.shape[0], row // pixels.dtype.itemsize).view(np.uint8)
    padded = np.zeros((pixels.shape[0], step), np.uint8)
    padded[:, :row] = rows.reshape(pixels.shape[0], row)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=2), frame_id="cam")
    return SimpleNamespace(header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                           is_bigendian=int(bigendian), step=step, data=padded.tobytes() if data is None else data)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3"])
def test_colour_encodings_give_rgb(encoding):
    rgb = rgb_image()
    native = {
        "rgb8": rgb, "bgr8": rgb[:, :, ::-1], "8UC3": rgb[:, :, ::-1],
        "rgba8": np.dstack([rgb, np.full((H, W), 9, np.uint8)]),
        "bgra8": np.dstack([rgb[:, :, ::-1], np.full((H, W), 9, np.uint8)]),
    }[encoding]
    out = message_to_rgb(image_msg(np.ascontiguousarray(native), encoding))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert np.array_equal(out, rgb)
    assert tuple(out[2, 3]) == tuple(rgb[2, 3])  # one pixel spelled out: channel order is right


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_is_replicated(encoding):
    gray = rgb_image()[:, :, 0].copy()
    out = message_to_rgb(image_msg(gray, encoding))
    assert np.array_equal(out, np.dstack([gray] * 3))


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_high_byte_rule_both_endiannesses(bigendian):
    values = np.array([[0, 255, 256, 4095], [4096, 32768, 65280, 65535]], dtype=np.uint16)
    msg = image_msg(values, "mono16", bigendian=bigendian)
    assert np.array_equal(image_to_array(msg), values)
    out = message_to_rgb(msg)
    expected = np.array([[0, 0, 1, 15], [16, 128, 255, 255]], np.uint8)
    assert np.array_equal(out[:, :, 0], expected) and np.array_equal(out[:, :, 2], expected)
    assert np.array_equal(mono16_to_8bit(values), expected)


def test_row_padding_is_skipped():
    rgb = rgb_image(3)
    out = message_to_rgb(image_msg(rgb, "rgb8", step=W * 3 + 5))
    assert np.array_equal(out, rgb)


@pytest.mark.parametrize("container", [bytes, bytearray, lambda b: array.array("B", b), list,
                                       lambda b: np.frombuffer(b, np.uint8)])
def test_data_containers_of_all_transports(container):
    rgb = rgb_image(4)
    raw = image_msg(rgb, "rgb8").data
    assert np.array_equal(message_to_rgb(image_msg(rgb, "rgb8", data=container(raw))), rgb)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed(fmt):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (250, 10, 10)
    rgb[:, 16:32] = (10, 250, 10)
    rgb[:, 32:] = (10, 10, 250)
    name, data = encode_compressed(rgb, fmt)
    assert fmt in name
    out = message_to_rgb(SimpleNamespace(header=None, format=name, data=data))
    assert out.shape == rgb.shape
    error = np.abs(out.astype(int) - rgb.astype(int))
    if fmt == "png":
        assert error.max() == 0
    else:  # lossy, and chroma subsampling smears the colour edges
        assert error.mean() < 8 and error[:, 4:12].max() <= 12
    assert out[16, 8].argmax() == 0 and out[16, 24].argmax() == 1 and out[16, 40].argmax() == 2


def test_compressed_mono16_png():
    values = np.array([[0, 65535], [256, 4096]], np.uint16)
    ok, buf = cv2.imencode(".png", values)
    assert ok
    out = compressed_to_rgb(SimpleNamespace(format="mono16; png compressed mono16", data=buf.tobytes()))
    assert np.array_equal(out[:, :, 1], mono16_to_8bit(values))


@pytest.mark.parametrize("change, words", [
    (dict(encoding="yuv444"), ["unsupported image encoding", "yuv444"]),
    (dict(step=W * 3 - 1), ["step", "width"]),
    (dict(data=b"\x00" * 10), ["data length 10", "step"]),
    (dict(height=0), ["no pixels"]),
])
def test_bad_raw_messages_are_rejected_by_name(change, words):
    msg = image_msg(rgb_image(), "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(WpsSamError) as err:
        message_to_rgb(msg)
    assert all(w in str(err.value) for w in words)


def test_odd_step_for_mono16_is_rejected():
    msg = image_msg(np.zeros((2, 2), np.uint16), "mono16", step=5)
    msg.data = b"\x00" * 10
    with pytest.raises(WpsSamError, match="multiple of 2"):
        message_to_rgb(msg)


@pytest.mark.parametrize("fmt, data, words", [
    ("tiff", b"\x01\x02", "unsupported compressed format"),
    ("jpeg", b"", "no data"),
    ("png", b"not a png at all", "could not decode"),
])
def test_bad_compressed_messages_are_rejected(fmt, data, words):
    with pytest.raises(WpsSamError, match=words):
        message_to_rgb(SimpleNamespace(format=fmt, data=data))


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_fields_round_trip(encoding):
    enc = ENCODINGS[encoding]
    dtype = np.uint16 if enc.bytes_per_channel == 2 else np.uint8
    shape = (H, W) if enc.channels == 1 else (H, W, enc.channels)
    pixels = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    fields = array_to_image_fields(pixels, encoding)
    assert fields["step"] * fields["height"] == len(fields["data"]) and fields["is_bigendian"] == 0
    assert np.array_equal(image_to_array(SimpleNamespace(**fields)), pixels)
