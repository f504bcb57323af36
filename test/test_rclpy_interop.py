"""The claim of the DDS transport, checked against real ROS 2 on rmw_cyclonedds_cpp, in both directions:
an rclpy node talks to `part_seg_node --transport dds`, and a bare Cyclone DDS camera talks to the rclpy node.

Needs a sourced ROS 2 with RMW_IMPLEMENTATION=rmw_cyclonedds_cpp and pip `cyclonedds`; skipped otherwise.
"""
from __future__ import annotations

import os
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy missing: needs a sourced ROS 2 install")
pytest.importorskip("vision_msgs", reason="vision_msgs missing: apt install ros-$ROS_DISTRO-vision-msgs")
pytest.importorskip("cyclonedds", reason="cyclonedds (pip) not installed")
from rclpy.utilities import get_rmw_implementation_identifier  # noqa: E402

if get_rmw_implementation_identifier() != "rmw_cyclonedds_cpp":
    pytest.skip("interop is claimed for rmw_cyclonedds_cpp: run with RMW_IMPLEMENTATION=rmw_cyclonedds_cpp",
                allow_module_level=True)

from cyclonedds.domain import Domain  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from wps_sam_ros.dds import LOOPBACK_CONFIG  # noqa: E402
from wps_sam_ros.messages import MessageFactory, RclpyBackend  # noqa: E402
from node_process import NodeProcess  # noqa: E402

from conftest import random_image  # noqa: E402
from rclpy_helpers import probe_node, spin_until  # noqa: E402
from test_ros_dds import Camera as DdsCamera  # noqa: E402

DOMAIN = 160 + os.getpid() % 30  # + 30 for the second test: both below 232 (Cyclone port range)
FRAMES = 5


@pytest.fixture(scope="module")
def probe():
    with probe_node("part_seg_interop_probe", DOMAIN) as node:
        yield node


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def node_params(tiny_files):
    sam_path, prompter_path = tiny_files
    return {"prompter_checkpoint": prompter_path, "sam_checkpoint": sam_path,
            "device": "cpu", "score_threshold": 0.0}


def test_rclpy_camera_to_dds_transport_node(probe, tiny_files):
    factory = MessageFactory(RclpyBackend())
    masks, instances = [], []
    reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    probe.create_subscription(Image, "/parts/masks", masks.append, reliable)
    probe.create_subscription(Detection2DArray, "/parts/instances", instances.append, reliable)
    camera = probe.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    with NodeProcess(node_params(tiny_files), DOMAIN, transport="dds") as node:
        assert spin_until(probe, lambda: camera.get_subscription_count() > 0, 30), node.log
        answered = 0
        for i in range(FRAMES):
            stamp = time.time_ns()

            def send(stamp=stamp, i=i):
                camera.publish(factory.image(factory.header(stamp, "cam"), random_image(48, 64, i), "rgb8"))
            # best effort: resend the same frame (same stamp) until its answer is in
            if spin_until(probe, lambda: stamp in {stamp_of(m) for m in masks} and
                          stamp in {stamp_of(m) for m in instances}, 20, send):
                answered += 1
        assert answered == FRAMES, node.log
        assert all(m.header.frame_id == "cam" and m.encoding == "mono8" for m in masks)


def test_dds_camera_to_rclpy_node(tiny_files):
    dom = Domain(DOMAIN + 30, LOOPBACK_CONFIG)
    node = NodeProcess(node_params(tiny_files), DOMAIN + 30, transport="ros")
    try:
        node.start(timeout=120)
        camera = DdsCamera(DOMAIN + 30)
        camera.wait_matched()
        answered = 0
        for i in range(FRAMES):
            stamp = time.time_ns()
            image = camera.factory.image(camera.factory.header(stamp, "cam"), random_image(48, 64, i), "rgb8")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and stamp not in camera.stamps("masks"):
                camera.writer.write(image)
                camera.wait_for(lambda: stamp in camera.stamps("masks"), 0.5)
            answered += stamp in camera.stamps("masks")
        assert answered == FRAMES, node.log
        (_, info), *_ = camera.received["label_info"]
        assert info.class_map[0].class_name == "background"
    finally:
        assert node.stop() == 0, node.log
        del dom
