"""RGB-D test messages for any MessageFactory backend (rosbags, Cyclone DDS, rclpy): a depth Image in 16UC1 / 32FC1
and a CameraInfo, as a RealSense publishes aligned_depth_to_color/image_raw and .../camera_info. A test harness."""
from __future__ import annotations

from typing import Any

import numpy as np

from wps_sam_core.postprocess.geometry3d import CameraIntrinsics


def intrinsics_for(height: int, width: int, focal: float = 50.0) -> CameraIntrinsics:
    """A pinhole with the principal point at the image centre (pixel-centre convention)."""
    return CameraIntrinsics(focal, focal, (width - 1) / 2, (height - 1) / 2, width, height)


def depth_image(factory, header: Any, metres: np.ndarray, encoding: str = "16UC1", bigendian: bool = False,
                pad: int = 0) -> Any:
    """HxW metres -> a depth Image (16UC1: millimetres, rounded; 32FC1: metres), `pad` bytes of row padding."""
    dtype = {"16UC1": "u2", "32FC1": "f4"}[encoding]
    values = np.round(metres * 1000.0) if encoding == "16UC1" else metres
    pixels = values.astype((">" if bigendian else "<") + dtype)
    height, width = pixels.shape
    rows = pixels.view(np.uint8).reshape(height, -1)
    data = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1).tobytes()
    return factory.new("sensor_msgs/msg/Image", header=header, height=height, width=width, encoding=encoding,
                       is_bigendian=int(bigendian), step=rows.shape[1] + pad, data=factory.backend.octets(data))


def camera_info(factory, header: Any, k: CameraIntrinsics, width: int | None = None, height: int | None = None) -> Any:
    """CameraInfo with K of `k` (width/height override the size it claims, for the mismatch cases)."""
    f64 = factory.backend.float64s
    matrix = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    projection = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    roi = factory.new("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return factory.new("sensor_msgs/msg/CameraInfo", header=header, height=k.height if height is None else height,
                       width=k.width if width is None else width, distortion_model="plumb_bob", d=f64([0.0] * 5),
                       k=f64(matrix), r=f64([1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]), p=f64(projection), binning_x=0,
                       binning_y=0, roi=roi)


def expected_centres(instance_map: np.ndarray, k: CameraIntrinsics, z: float = 1.0) -> dict[int, tuple]:
    """Part centres on a flat plane at z metres (every pixel an inlier): the mean back-projected pixel."""
    out = {}
    for i in np.unique(instance_map):
        if i:
            v, u = np.nonzero(instance_map == i)
            out[int(i)] = (float(np.mean((u - k.cx) / k.fx) * z), float(np.mean((v - k.cy) / k.fy) * z), z)
    return out
