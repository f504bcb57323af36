"""The rclpy node with depth_topic under a real ROS 2 (a child process, as a user starts it): message_filters pairs
colour and depth; before any CameraInfo the 2D outputs go on and /diagnostics WARNs that 3D is waiting; with
CameraInfo, /parts/detections_3d centres equal the back-projected parts of the instance map of the same frame.

Needs a sourced ROS 2 (rclpy, message_filters, vision_msgs); skipped otherwise."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy missing: needs a sourced ROS 2 install")
pytest.importorskip("message_filters", reason="message_filters missing: apt install ros-$ROS_DISTRO-message-filters")
pytest.importorskip("vision_msgs", reason="vision_msgs missing: apt install ros-$ROS_DISTRO-vision-msgs")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from vision_msgs.msg import Detection3DArray  # noqa: E402

from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.messages import MessageFactory, RclpyBackend  # noqa: E402
from wps_sam_ros.sync import stamp_ns  # noqa: E402
from node_process import NodeProcess  # noqa: E402

from conftest import random_image  # noqa: E402
from rclpy_helpers import probe_node, spin_until  # noqa: E402
from rgbd import camera_info, depth_image, expected_centres, intrinsics_for  # noqa: E402

DOMAIN = 180 + os.getpid() % 40
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
H, W = 48, 64
K = intrinsics_for(H, W)
NS = "rgbd"
COLOUR, DEPTH = f"/{NS}/camera/color/image_raw", f"/{NS}/camera/aligned_depth_to_color/image_raw"


def stamp_of(msg) -> int:
    return stamp_ns(msg.header)


def test_message_filters_pairs_colour_and_depth_and_3d_waits_for_camera_info(tiny_files):
    sam_path, prompter_path = tiny_files
    params = {"prompter_checkpoint": prompter_path, "sam_checkpoint": sam_path, "device": "cpu",
              "score_threshold": 0.0, "diagnostics_period": 0.3, "image_topic": COLOUR, "depth_topic": DEPTH}
    node = NodeProcess(params, DOMAIN, transport="ros", ros_args=["-r", f"__ns:=/{NS}"])
    factory = MessageFactory(RclpyBackend())
    got: dict[str, list] = {"dets": [], "inst": [], "diag": []}
    with probe_node("rgbd_probe", DOMAIN) as probe:
        colour = probe.create_publisher(Image, COLOUR, qos_profile_sensor_data)
        depth = probe.create_publisher(Image, DEPTH, qos_profile_sensor_data)
        info = probe.create_publisher(CameraInfo, topics.camera_info_topic(DEPTH), qos_profile_sensor_data)
        probe.create_subscription(Detection3DArray, f"/{NS}/parts/detections_3d", got["dets"].append, RELIABLE)
        probe.create_subscription(Image, f"/{NS}/parts/instance_masks", got["inst"].append, RELIABLE)
        probe.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, RELIABLE)
        sent: list[int] = []

        def send(with_info: bool) -> None:
            stamp = time.time_ns()
            header = factory.header(stamp, "camera_color_optical_frame")
            depth_header = factory.header(stamp + 1_000_000, "camera_color_optical_frame")  # 1 ms later: within slop
            if with_info:
                info.publish(camera_info(factory, depth_header, K))
            depth.publish(depth_image(factory, depth_header, np.ones((H, W), np.float32)))
            colour.publish(factory.image(header, random_image(H, W, len(sent) % 4), "rgb8"))
            sent.append(stamp)

        def last_status():
            return got["diag"][-1].status[0] if got["diag"] else None

        def waiting_for_camera_info() -> bool:
            status = last_status()
            values = {kv.key: kv.value for kv in status.values} if status else {}
            return values.get("camera_info") == "waiting" and "3D waiting for CameraInfo" in status.message

        try:
            node.start(timeout=120)
            # no CameraInfo yet: 2D answers, /diagnostics says why there is no 3D
            assert spin_until(probe, lambda: got["inst"] and waiting_for_camera_info(), 60,
                              every=lambda: send(with_info=False)), node.log
            assert not got["dets"] and last_status().level == b"\x01"  # WARN
            with_info_from = len(sent)
            assert spin_until(probe, lambda: len(got["dets"]) >= 3, 60, every=lambda: send(with_info=True)), node.log
            # the instance maps of those frames (published with them; wait for them, not for a fixed time)
            assert spin_until(probe, lambda: {stamp_of(d) for d in got["dets"]} <= {stamp_of(m) for m in got["inst"]},
                              30), node.log
        finally:
            node.stop(timeout=20)
    assert node.returncode == 0, node.log
    instance_maps = {stamp_of(m): np.frombuffer(bytes(m.data), "<u2").reshape(m.height, m.width) for m in got["inst"]}
    checked = 0
    for dets in got["dets"]:
        stamp = stamp_of(dets)
        assert stamp in sent[with_info_from:] and stamp in instance_maps
        expected = expected_centres(instance_maps[stamp], K)
        assert {int(d.id) for d in dets.detections} == set(expected)
        for det in dets.detections:
            p = det.bbox.center.position
            assert (p.x, p.y, p.z) == pytest.approx(expected[int(det.id)], abs=1e-6)
            checked += 1
    assert checked > 0
