"""launch_pytest: what a user meets on first run of launch/part_seg.launch.py: no checkpoint (the embedded demo
model, which says at start and in /diagnostics that it knows no real objects), compressed input with reliable QoS,
launch arguments that reach the node's parameters (image_transport, input_qos, device, use_sim_time).

Needs a sourced ROS 2 workspace with this package built (`colcon build`); skipped otherwise. Its own module:
launch_pytest runs one launch fixture per module.
"""
from __future__ import annotations

import time

import pytest

from ros_workspace import installed_package_or_skip

launch_pytest, SHARE = installed_package_or_skip()

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.parameter import parameter_value_to_python  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.conversions import encode_compressed  # noqa: E402
from wps_sam_ros.messages import WARN, MessageFactory, RclpyBackend  # noqa: E402

from conftest import random_image  # noqa: E402
from rclpy_helpers import call, probe_node, spin_until  # noqa: E402

LAUNCH_FILE = SHARE / "launch" / topics.LAUNCH_FILE
EMBEDDED_NS = "lt_embedded"


@pytest.fixture(scope="module")
def probe():
    with probe_node("part_seg_first_run_probe", loopback=False) as node:
        yield node


@launch_pytest.fixture(scope="module")
def embedded_launch():
    """The launch file as a user starts it first: no checkpoint (embedded model), compressed input."""
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"namespace": EMBEDDED_NS, "image_topic": f"/{EMBEDDED_NS}/image", "device": "cpu",
                          "image_transport": "compressed", "input_qos": "reliable", "use_sim_time": "false"}.items(),
    )
    return LaunchDescription([include, launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=embedded_launch)
def test_launch_arguments_reach_the_node_and_the_demo_model_says_what_it_is(probe):
    node = f"/{EMBEDDED_NS}/{topics.NODE_NAME}"
    names = ["image_transport", "input_qos", "device", "use_sim_time", "prompter_checkpoint"]
    reply = call(probe, GetParameters, f"{node}/get_parameters", GetParameters.Request(names=names), timeout=120)
    assert [parameter_value_to_python(v) for v in reply.values] == ["compressed", "reliable", "cpu", False, ""]

    factory = MessageFactory(RclpyBackend())
    masks, diagnostics = [], []
    reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    probe.create_subscription(Image, f"/{EMBEDDED_NS}/parts/masks", masks.append, reliable)
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, reliable)
    camera = probe.create_publisher(CompressedImage, f"/{EMBEDDED_NS}/image/compressed", reliable)
    stamp = time.time_ns()
    jpeg = factory.compressed_image(factory.header(stamp, "cam"), *encode_compressed(random_image(96, 128), "jpeg"))
    assert spin_until(probe, lambda: masks, 120, lambda: camera.publish(jpeg)), "compressed frame not answered"
    assert masks[0].header.stamp.sec * 10**9 + masks[0].header.stamp.nanosec == stamp

    def ours():
        return [d.status[0] for d in diagnostics if d.status and d.status[0].name.startswith(topics.NODE_NAME)]
    assert spin_until(probe, ours, 30)
    status = ours()[-1]
    assert status.level == bytes([WARN]) and "demo model" in status.message  # rclpy: `byte` is bytes
