"""Depth Image -> metres (16UC1 mm, 32FC1 m, both byte orders, row padding), CameraInfo -> CameraIntrinsics, and
the checks that keep a wrong depth or CameraInfo from becoming wrong 3D positions: each a one-line WpsSamError."""
from __future__ import annotations

import numpy as np
import pytest

from wps_sam_core.errors import WpsSamError
from wps_sam_ros.conversions import camera_info_to_intrinsics, depth_for_image, depth_to_metres, resize_nearest
from wps_sam_ros.messages import MessageFactory, RosbagsBackend

from rgbd import camera_info, depth_image, intrinsics_for

FACTORY = MessageFactory(RosbagsBackend())
HEADER = FACTORY.header(5, "depth_optical")
METRES = np.array([[0.0, 1.0, 1.234], [2.5, 0.4, 65.535]], np.float32)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 4])
def test_depth_in_metres_for_both_encodings_byte_orders_and_padding(encoding, bigendian, pad):
    msg = depth_image(FACTORY, HEADER, METRES, encoding, bigendian, pad)
    got = depth_to_metres(msg)
    assert got.dtype == np.float32 and got.shape == (2, 3)
    assert np.array_equal(got, METRES)  # 16UC1: mm / 1000 is the float32 nearest the metres
    assert got[0, 0] == 0.0  # "no depth" stays 0


def test_32fc1_nan_and_inf_stay_no_depth_values():
    metres = np.array([[np.nan, np.inf, 1.5]], np.float32)
    got = depth_to_metres(depth_image(FACTORY, HEADER, metres, "32FC1"))
    assert np.isnan(got[0, 0]) and np.isinf(got[0, 1]) and got[0, 2] == 1.5


@pytest.mark.parametrize("change, words", [
    ({"encoding": "mono16"}, "unsupported depth encoding 'mono16'; supported: 16UC1 (millimetres), 32FC1 (metres)"),
    ({"encoding": "32FC3"}, "unsupported depth encoding '32FC3'; supported: 16UC1 (millimetres), 32FC1 (metres)"),
    ({"width": 0}, "depth image has no pixels: height=2 width=0"),
    ({"step": 5}, "depth image step 5 does not fit width 3 x 2 bytes (16UC1)"),
    ({"step": 7}, "depth image step 7 does not fit width 3 x 2 bytes (16UC1)"),
    ({"height": 3}, "depth image data length 12 != step 6 x height 3 = 18"),
])
def test_bad_depth_images_are_one_line_naming_the_field(change, words):
    msg = depth_image(FACTORY, HEADER, METRES, "16UC1")
    for field, value in change.items():
        setattr(msg, field, value)
    with pytest.raises(WpsSamError) as info:
        depth_to_metres(msg)
    assert str(info.value) == words


def test_camera_info_gives_k_and_refuses_zero_focal_length_or_size():
    k = intrinsics_for(48, 64, focal=52.5)
    assert camera_info_to_intrinsics(camera_info(FACTORY, HEADER, k)) == k
    info = camera_info(FACTORY, HEADER, k)
    info.k[0] = 0.0  # an uncalibrated driver publishes an all-zero K
    with pytest.raises(WpsSamError, match=r"^CameraInfo unusable: focal length fx must be a finite number > 0, got 0.0$"):
        camera_info_to_intrinsics(info)
    with pytest.raises(WpsSamError, match=r"^CameraInfo unusable: width must be an integer >= 1, got 0$"):
        camera_info_to_intrinsics(camera_info(FACTORY, HEADER, k, width=0))


def test_depth_for_image_checks_every_size():
    k = intrinsics_for(2, 3)
    depth = depth_image(FACTORY, HEADER, METRES)
    got, intrinsics = depth_for_image(depth, camera_info(FACTORY, HEADER, k), (2, 3), False)
    assert np.array_equal(got, METRES) and intrinsics == k
    with pytest.raises(WpsSamError, match=r"^CameraInfo is for 640x480 but the depth image is 3x2 \(camera_info_topic"):
        depth_for_image(depth, camera_info(FACTORY, HEADER, k, 640, 480), (2, 3), False)
    with pytest.raises(WpsSamError, match=r"^depth image is 3x2 but the colour image is 6x4; use the depth aligned to "
                                          r"the colour image, or depth_scale_to_image: true \(nearest neighbour\)$"):
        depth_for_image(depth, camera_info(FACTORY, HEADER, k), (4, 6), False)


def test_scaled_depth_keeps_every_pixel_on_its_ray():
    """depth_scale_to_image: a 2x upscaled depth with the scaled K back-projects each new pixel onto the ray of the
    depth pixel it was copied from, within the half-pixel the resize moves it."""
    k = intrinsics_for(2, 3, focal=10.0)
    depth, scaled = depth_for_image(depth_image(FACTORY, HEADER, METRES), camera_info(FACTORY, HEADER, k), (4, 6), True)
    assert depth.shape == (4, 6) and np.array_equal(depth[::2, ::2], METRES) and np.array_equal(depth[1::2, 1::2], METRES)
    assert (scaled.fx, scaled.cx, scaled.width) == (20.0, 2.5, 6)
    u = np.arange(6)
    ray_scaled = (u - scaled.cx) / scaled.fx
    ray_source = ((u // 2) - k.cx) / k.fx
    assert np.abs(ray_scaled - ray_source).max() <= 0.5 / scaled.fx + 1e-12


def test_resize_nearest_samples_pixel_centres():
    image = np.arange(12).reshape(3, 4)
    assert np.array_equal(resize_nearest(image, 3, 4), image)
    assert np.array_equal(resize_nearest(image, 6, 8)[::2, ::2], image)
    # 2x2 blocks -> 1 pixel: the block's centre (1.0, 1.0) rounds to its lower-right pixel
    assert np.array_equal(resize_nearest(np.arange(8).reshape(2, 4), 1, 2), [[5, 7]])
