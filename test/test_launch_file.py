"""launch_pytest: launch/part_seg.launch.py declares the arguments of topics.py and, with use_lifecycle:=true
autostart:=true, brings the managed node to `active`; deactivate stops its output.

Needs a sourced ROS 2 workspace with this package built (`colcon build && colcon test`); skipped otherwise.
"""
from __future__ import annotations

import time

import pytest
import yaml

from ros_workspace import installed_package_or_skip

launch_pytest, SHARE = installed_package_or_skip()
import rclpy  # noqa: E402

from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource, get_launch_description_from_python_launch_file  # noqa: E402,E501
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.messages import MessageFactory, RclpyBackend  # noqa: E402

from conftest import load_module_from, random_image  # noqa: E402
from rclpy_helpers import change_state, lifecycle_state, probe_node  # noqa: E402

LAUNCH_FILE = SHARE / "launch" / topics.LAUNCH_FILE
NAMESPACE = "lt_launch"
IMAGE_TOPIC = f"/{NAMESPACE}/image"
NODE = f"/{NAMESPACE}/{topics.NODE_NAME}"


def test_installed_launch_file_declares_the_topics_arguments():
    description = get_launch_description_from_python_launch_file(str(LAUNCH_FILE))
    declared = {arg.name: arg for arg in description.get_launch_arguments()}
    assert set(declared) == set(topics.LAUNCH_ARGUMENTS)
    for name, spec in topics.LAUNCH_ARGUMENTS.items():
        assert (declared[name].choices or []) == list(spec.choices), name
        if name != "params_file":  # a substitution resolving to the installed YAML
            assert [s.text for s in declared[name].default_value] == [spec.default], name
    assert (SHARE / "config" / topics.CONFIG_FILE).is_file()


@launch_pytest.fixture(scope="module")
def lifecycle_launch(tiny_files, tmp_path_factory):
    sam_path, prompter_path = tiny_files
    params = yaml.safe_load((SHARE / "config" / topics.CONFIG_FILE).read_text())
    params["/**"]["ros__parameters"].update(score_threshold=0.0, diagnostics_period=0.5)
    params_file = tmp_path_factory.mktemp("launch") / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={
            "params_file": str(params_file), "image_topic": IMAGE_TOPIC, "prompter_checkpoint": str(prompter_path),
            "sam_checkpoint": str(sam_path), "device": "cpu", "namespace": NAMESPACE,
            "use_lifecycle": "true", "autostart": "true",
        }.items(),
    )
    return LaunchDescription([include, launch_pytest.actions.ReadyToTest()])


@pytest.fixture(scope="module")
def probe():
    with probe_node("part_seg_launch_probe", loopback=False) as node:
        yield node


@pytest.mark.launch(fixture=lifecycle_launch)
def test_autostart_reaches_active_and_deactivate_stops_output(probe):
    deadline = time.monotonic() + 120  # configure loads the model
    while lifecycle_state(probe, NODE) != State.PRIMARY_STATE_ACTIVE and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lifecycle_state(probe, NODE) == State.PRIMARY_STATE_ACTIVE

    factory = MessageFactory(RclpyBackend())
    masks: list = []
    probe.create_subscription(Image, topics.resolve(topics.OUTPUT_TOPICS["masks"].name, NAMESPACE), masks.append,
                              QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    camera = probe.create_publisher(Image, IMAGE_TOPIC, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))

    def feed_until(predicate, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            camera.publish(factory.image(factory.header(time.time_ns(), "cam"), random_image(48, 64), "rgb8"))
            for _ in range(5):
                rclpy.spin_once(probe, timeout_sec=0.1)
            if predicate():
                return True
        return False

    assert feed_until(lambda: len(masks) > 0, 60), "active lifecycle node did not answer"
    assert change_state(probe, NODE, Transition.TRANSITION_DEACTIVATE)
    assert lifecycle_state(probe, NODE) == State.PRIMARY_STATE_INACTIVE
    # autostart must not undo the user's deactivate (it reacts to configuring -> inactive only, once)
    states = []
    for _ in range(10):
        rclpy.spin_once(probe, timeout_sec=0.2)
        states.append(lifecycle_state(probe, NODE))
    assert set(states) == {State.PRIMARY_STATE_INACTIVE}, states
    feed_until(lambda: False, 1.0)  # let in-flight frames land
    count = len(masks)
    assert not feed_until(lambda: len(masks) > count, 3.0), "inactive node still publishes"
    assert change_state(probe, NODE, Transition.TRANSITION_CLEANUP)
    assert lifecycle_state(probe, NODE) == State.PRIMARY_STATE_UNCONFIGURED


def load_launch_module():
    return load_module_from(LAUNCH_FILE, "part_seg_launch")


def test_device_argument_accepts_cuda_index():
    """launch checks choices when the argument is executed: cuda:1 must pass (the node judges devices)."""
    from launch import LaunchContext

    description = get_launch_description_from_python_launch_file(str(LAUNCH_FILE))
    device = next(arg for arg in description.get_launch_arguments() if arg.name == "device")
    context = LaunchContext()
    context.launch_configurations["device"] = "cuda:1"
    device.execute(context)  # raises if "cuda:1" is not among the choices
    assert context.launch_configurations["device"] == "cuda:1"


def test_typos_and_parameter_names_on_the_launch_line_are_warned_about():
    from launch import LaunchContext

    context = LaunchContext()
    for name, value in (("image_tpoic", "/cam"), ("score_threshold", "0.3"), ("robot_model", "x"),
                        ("image_topic", "/cam")):
        context.launch_configurations[name] = value
    warnings = load_launch_module().suspicious_arguments(context)
    assert len(warnings) == 2, warnings
    assert "'image_tpoic' ignored; did you mean 'image_topic'" in warnings[0]
    assert "'score_threshold' is a node parameter" in warnings[1]
