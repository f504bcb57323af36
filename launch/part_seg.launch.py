"""Launch the WPS-SAM part segmentation node.

  ros2 launch wps_sam_ros part_seg.launch.py image_topic:=/camera/color/image_raw device:=cuda:1
  ros2 launch wps_sam_ros part_seg.launch.py use_lifecycle:=true autostart:=false namespace:=robot1

Arguments, their defaults and choices come from wps_sam_ros.topics (the one source of truth):
parameter-like arguments (image_topic, image_transport, input_qos, sam_checkpoint, prompter_checkpoint,
device, use_sim_time) override the params_file value only when given, so edits to the YAML are not
undone by launch defaults. Launch itself ignores arguments nobody declared; this file warns about
those that look like a typo of its own or like a node parameter.
"""
import difflib

from launch import LaunchDescription
import launch.logging
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from wps_sam_ros import topics


def _change_state(node, transition_id):
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))


def _overrides(value):
    """Parameters set on the launch line; strings stay strings (no YAML guessing: device:=1 is not an int)."""
    out = {name: ParameterValue(value[name], value_type=str) for name in topics.PARAMETER_ARGUMENTS if value[name]}
    if value["use_sim_time"]:
        out["use_sim_time"] = value["use_sim_time"] == "true"
    return out


def suspicious_arguments(context):
    """Warnings for launch configurations that look meant for this file but are not its arguments."""
    warnings = []
    for name in sorted(set(context.launch_configurations) - set(topics.LAUNCH_ARGUMENTS)):
        close = difflib.get_close_matches(name, topics.LAUNCH_ARGUMENTS, n=1, cutoff=0.75)
        if close:
            warnings.append(f"unknown launch argument '{name}' ignored; did you mean '{close[0]}'?")
        elif name in topics.PARAMETERS:
            warnings.append(f"launch argument '{name}' is a node parameter, not an argument of "
                            f"{topics.LAUNCH_FILE}: set it in params_file (ignored)")
    return warnings


def launch_setup(context, *args, **kwargs):
    """Build the node once the arguments are known (Node or LifecycleNode, overrides only when set)."""
    value = {name: LaunchConfiguration(name).perform(context) for name in topics.LAUNCH_ARGUMENTS}
    common = dict(
        package=topics.PACKAGE, executable=topics.EXECUTABLE, name=topics.NODE_NAME,
        namespace=value["namespace"], parameters=[value["params_file"], _overrides(value)], output="screen",
    )
    for text in suspicious_arguments(context):
        launch.logging.get_logger(topics.LAUNCH_FILE).warning(text)
    if value["use_lifecycle"] != "true":
        return [Node(**common)]
    node = LifecycleNode(arguments=["--lifecycle"], **common)
    if value["autostart"] != "true":
        return [node]
    # Only configuring -> inactive, once: inactive is also reached by deactivate and by a failed activate,
    # and re-activating then would undo the user's `ros2 lifecycle set ... deactivate`.
    activate_when_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[_change_state(node, Transition.TRANSITION_ACTIVATE)], handle_once=True))
    return [node, activate_when_configured, _change_state(node, Transition.TRANSITION_CONFIGURE)]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare(topics.PACKAGE), "config", topics.CONFIG_FILE])
    declared = [
        DeclareLaunchArgument(
            name, default_value=default_params if name == "params_file" else arg.default,
            description=arg.description, choices=list(arg.choices) or None)
        for name, arg in topics.LAUNCH_ARGUMENTS.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=launch_setup)])
