"""launch_pytest: the installed rclpy node (launch_ros Node action) answers images on /<ns>/parts/*, copies
headers, latches LabelInfo, publishes /diagnostics and accepts/rejects run-time parameters.

Needs a sourced ROS 2 workspace with this package built (`colcon build && colcon test`); skipped otherwise.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from ros_workspace import installed_package_or_skip

launch_pytest, _ = installed_package_or_skip()
import rclpy  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch_ros.actions import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import Detection2DArray, LabelInfo  # noqa: E402

from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.messages import MessageFactory, RclpyBackend  # noqa: E402

from conftest import TEST_CLASSES, random_image  # noqa: E402
from rclpy_helpers import probe_node, set_parameter, spin_until  # noqa: E402

NAMESPACE = "lt_node"
IMAGE_TOPIC = f"/{NAMESPACE}/image"


@launch_pytest.fixture(scope="module")
def node_under_test(tiny_files):
    sam_path, prompter_path = tiny_files
    node = Node(
        package=topics.PACKAGE, executable=topics.EXECUTABLE, name=topics.NODE_NAME, namespace=NAMESPACE,
        parameters=[{"image_topic": IMAGE_TOPIC, "prompter_checkpoint": str(prompter_path),
                     "sam_checkpoint": str(sam_path), "device": "cpu", "score_threshold": 0.0,
                     "diagnostics_period": 0.5}],
        output="screen",
    )
    return LaunchDescription([node, launch_pytest.actions.ReadyToTest()])


@pytest.fixture(scope="module")
def probe():
    with probe_node("part_seg_probe", loopback=False) as node:
        yield node


def set_node_parameter(probe, name: str, value, type_: Parameter.Type):
    return set_parameter(probe, f"/{NAMESPACE}/{topics.NODE_NAME}", name, value, type_)


def frame(factory, stamp: int, encoding: str, seed: int):
    rgb = random_image(48, 64, seed)
    pixels = {"rgb8": rgb, "bgr8": np.ascontiguousarray(rgb[:, :, ::-1]),
              "mono8": np.ascontiguousarray(rgb.mean(axis=2).astype(np.uint8))}[encoding]
    return factory.image(factory.header(stamp, "cam"), pixels, encoding)


@pytest.mark.launch(fixture=node_under_test)
def test_node_answers_camera_encodings_with_standard_messages(probe):
    """A camera driver's publisher (sensor_data QoS) in rgb8, bgr8 and mono8; every per-frame output, the
    overlay included while subscribed, carries the frame's header; /diagnostics counts the frames."""
    factory = MessageFactory(RclpyBackend())
    got = {"masks": [], "instance_masks": [], "instances": [], "overlay": [], "diagnostics": []}
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    for key, msg_type in (("masks", Image), ("instance_masks", Image), ("instances", Detection2DArray),
                          ("overlay", Image), ("diagnostics", DiagnosticArray)):
        topic = topics.resolve(topics.OUTPUT_TOPICS[key].name, NAMESPACE)
        probe.create_subscription(msg_type, topic, lambda m, k=key: got[k].append(m), reliable)
    camera = probe.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)

    def answered(stamp: int) -> bool:
        return all(any(m.header.stamp == stamp_msg(stamp) for m in got[key])
                   for key in ("masks", "instance_masks", "instances", "overlay"))

    for seed, encoding in enumerate(("rgb8", "bgr8", "mono8")):
        stamp = time.time_ns()
        resend = lambda: camera.publish(frame(factory, stamp, encoding, seed))  # noqa: E731 (best effort)
        assert spin_until(probe, lambda: answered(stamp), 120, resend), f"{encoding} frame not answered"
        masks = next(m for m in got["masks"] if m.header.stamp == stamp_msg(stamp))
        ids_msg = next(m for m in got["instance_masks"] if m.header.stamp == stamp_msg(stamp))
        dets = next(d for d in got["instances"] if d.header.stamp == stamp_msg(stamp))
        overlay = next(m for m in got["overlay"] if m.header.stamp == stamp_msg(stamp))
        assert masks.header.frame_id == ids_msg.header.frame_id == dets.header.frame_id == "cam"
        assert (masks.encoding, masks.height, masks.width) == ("mono8", 48, 64)
        ids = np.frombuffer(bytes(ids_msg.data), "<u2").reshape(masks.height, masks.width)
        assert {int(d.id) for d in dets.detections} == set(np.unique(ids)) - {0}
        assert {d.results[0].hypothesis.class_id for d in dets.detections} <= set(TEST_CLASSES)
        assert overlay.encoding == "rgb8" and overlay.height == 48 and overlay.width > 64  # + legend panel
    assert spin_until(probe, lambda: got["diagnostics"] and int(diag_values(got)["frames_processed"]) >= 3, 10)
    values = diag_values(got)
    assert values["device"] == "cpu" and int(values["frames_received"]) >= int(values["frames_processed"]) >= 3


@pytest.mark.launch(fixture=node_under_test)
def test_label_info_reaches_a_late_subscriber(probe):
    infos: list = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    topic = topics.resolve(topics.OUTPUT_TOPICS["label_info"].name, NAMESPACE)
    assert spin_until(probe, lambda: probe.count_publishers(topic) == 1, 60)  # the node is up: we are late
    probe.create_subscription(LabelInfo, topic, infos.append, latched)
    assert spin_until(probe, lambda: infos, 10)
    assert [c.class_name for c in infos[0].class_map] == ["background", *TEST_CLASSES]


def stamp_msg(stamp_ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)


def diag_values(got) -> dict[str, str]:
    ours = [d for d in got["diagnostics"] if d.status and d.status[0].name.startswith(topics.NODE_NAME)]
    return {kv.key: kv.value for kv in ours[-1].status[0].values} if ours else {"frames_processed": "0"}


@pytest.mark.launch(fixture=node_under_test)
def test_parameters_are_validated_at_run_time(probe):
    rejected = set_node_parameter(probe, "score_threshold", 1.5, Parameter.Type.DOUBLE)
    assert not rejected.successful and "score_threshold" in rejected.reason
    fixed = set_node_parameter(probe, "device", "cuda", Parameter.Type.STRING)
    assert not fixed.successful and "restart" in fixed.reason
    unknown_class = set_node_parameter(probe, "class_filter", "no_such_part", Parameter.Type.STRING)
    assert not unknown_class.successful and "no_such_part" in unknown_class.reason
    assert set_node_parameter(probe, "score_threshold", 0.2, Parameter.Type.DOUBLE).successful
    # rclpy's own parameters are not this package's to refuse
    assert set_node_parameter(probe, "use_sim_time", False, Parameter.Type.BOOL).successful
    if hasattr(rclpy.node.Node, "add_pre_set_parameters_callback"):  # Iron+: `ros2 param set ... 1` is 1.0
        assert set_node_parameter(probe, "score_threshold", 0, Parameter.Type.INTEGER).successful
    assert set_node_parameter(probe, "class_filter", TEST_CLASSES[0], Parameter.Type.STRING).successful
