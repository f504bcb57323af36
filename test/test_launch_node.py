"""launch_pytest: the installed rclpy node (launch_ros Node action) answers images on /<ns>/parts/*, copies
headers, latches LabelInfo, publishes /diagnostics and accepts/rejects run-time parameters.

Needs a sourced ROS 2 workspace with this package built (`colcon build && colcon test`); skipped otherwise.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

launch_pytest = pytest.importorskip("launch_pytest", reason="launch_pytest missing: needs a sourced ROS 2 install")
rclpy = pytest.importorskip("rclpy", reason="rclpy missing: needs a sourced ROS 2 install")
pytest.importorskip("vision_msgs", reason="vision_msgs missing: apt install ros-$ROS_DISTRO-vision-msgs")
ament_index = pytest.importorskip("ament_index_python.packages", reason="ament_index_python missing")
try:
    ament_index.get_package_share_directory("wps_sam_ros")
except ament_index.PackageNotFoundError:
    pytest.skip("wps_sam_ros is not installed in the sourced workspace (colcon build)", allow_module_level=True)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch_ros.actions import Node  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import Detection2DArray, LabelInfo  # noqa: E402

from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.messages import MessageFactory, RclpyBackend  # noqa: E402

from conftest import TEST_CLASSES, random_image  # noqa: E402

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
    rclpy.init()
    node = rclpy.create_node("part_seg_probe")
    yield node
    node.destroy_node()
    rclpy.shutdown()


def spin_until(node, predicate, timeout: float, every=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if every is not None:
            every()
        rclpy.spin_once(node, timeout_sec=0.1)
        if predicate():
            return True
    return False


def set_parameter(probe, name: str, value, type_: Parameter.Type):
    client = probe.create_client(SetParameters, f"/{NAMESPACE}/{topics.NODE_NAME}/set_parameters")
    assert client.wait_for_service(timeout_sec=30)
    request = SetParameters.Request(parameters=[Parameter(name, type_, value).to_parameter_msg()])
    future = client.call_async(request)
    rclpy.spin_until_future_complete(probe, future, timeout_sec=30)
    probe.destroy_client(client)
    return future.result().results[0]


@pytest.mark.launch(fixture=node_under_test)
def test_node_answers_with_standard_messages(probe):
    factory = MessageFactory(RclpyBackend())
    got = {"masks": [], "instance_masks": [], "instances": [], "label_info": [], "diagnostics": []}
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    for key, msg_type, qos in (("masks", Image, reliable), ("instance_masks", Image, reliable),
                               ("instances", Detection2DArray, reliable), ("label_info", LabelInfo, latched),
                               ("diagnostics", DiagnosticArray, reliable)):
        topic = topics.resolve(topics.OUTPUT_TOPICS[key].name, NAMESPACE)
        probe.create_subscription(msg_type, topic, lambda m, k=key: got[k].append(m), qos)
    camera = probe.create_publisher(Image, IMAGE_TOPIC, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    sent: list[int] = []

    def publish():  # until the node (loading its model) answers: a new frame every call
        if not sent or time.monotonic() - publish.last > 0.5:
            stamp = time.time_ns()
            camera.publish(factory.image(factory.header(stamp, "cam"), random_image(48, 64, len(sent)), "rgb8"))
            sent.append(stamp)
            publish.last = time.monotonic()
    publish.last = 0.0

    assert spin_until(probe, lambda: got["masks"] and got["instances"] and got["instance_masks"], 120, publish)
    assert spin_until(probe, lambda: got["label_info"] and got["diagnostics"], 10)
    masks, dets = got["masks"][0], got["instances"][0]
    stamp = masks.header.stamp.sec * 10**9 + masks.header.stamp.nanosec
    assert stamp in sent and masks.header.frame_id == "cam" and masks.encoding == "mono8"
    same_frame = [m for m in got["instance_masks"] if m.header.stamp == masks.header.stamp]
    ids = np.frombuffer(bytes(same_frame[0].data), "<u2").reshape(masks.height, masks.width)
    dets = next(d for d in got["instances"] if d.header.stamp == masks.header.stamp)
    assert {int(d.id) for d in dets.detections} == set(np.unique(ids)) - {0}
    assert {d.results[0].hypothesis.class_id for d in dets.detections} <= set(TEST_CLASSES)
    assert [c.class_name for c in got["label_info"][0].class_map] == ["background", *TEST_CLASSES]
    values = {kv.key: kv.value for kv in got["diagnostics"][-1].status[0].values}
    assert values["device"] == "cpu" and int(values["frames_received"]) >= 1


@pytest.mark.launch(fixture=node_under_test)
def test_parameters_are_validated_at_run_time(probe):
    rejected = set_parameter(probe, "score_threshold", 1.5, Parameter.Type.DOUBLE)
    assert not rejected.successful and "score_threshold" in rejected.reason
    fixed = set_parameter(probe, "device", "cuda", Parameter.Type.STRING)
    assert not fixed.successful and "restart" in fixed.reason
    unknown_class = set_parameter(probe, "class_filter", "no_such_part", Parameter.Type.STRING)
    assert not unknown_class.successful and "no_such_part" in unknown_class.reason
    assert set_parameter(probe, "score_threshold", 0.2, Parameter.Type.DOUBLE).successful
    assert set_parameter(probe, "class_filter", TEST_CLASSES[0], Parameter.Type.STRING).successful
