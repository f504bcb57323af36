"""Launch the WPS-SAM part segmentation node.

  ros2 launch wps_sam_ros part_seg.launch.py image_topic:=/camera/color/image_raw device:=cuda
  ros2 launch wps_sam_ros part_seg.launch.py use_lifecycle:=true autostart:=false namespace:=robot1

Arguments, their defaults and choices come from wps_sam_ros.topics (the one source of truth):
parameter-like arguments (image_topic, sam_checkpoint, prompter_checkpoint, device) override the
params_file value only when given, so edits to the YAML are not undone by launch defaults.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from wps_sam_ros import topics


def _change_state(node, transition_id):
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))


def launch_setup(context, *args, **kwargs):
    """Build the node once the arguments are known (Node or LifecycleNode, overrides only when set)."""
    value = {name: LaunchConfiguration(name).perform(context) for name in topics.LAUNCH_ARGUMENTS}
    overrides = {name: value[name] for name in topics.PARAMETER_ARGUMENTS if value[name]}
    common = dict(
        package=topics.PACKAGE, executable=topics.EXECUTABLE, name=topics.NODE_NAME,
        namespace=value["namespace"], parameters=[value["params_file"], overrides], output="screen",
    )
    if value["use_lifecycle"] != "true":
        return [Node(**common)]
    node = LifecycleNode(arguments=["--lifecycle"], **common)
    if value["autostart"] != "true":
        return [node]
    activate_when_inactive = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, goal_state="inactive",
        entities=[_change_state(node, Transition.TRANSITION_ACTIVATE)]))
    return [node, activate_when_inactive, _change_state(node, Transition.TRANSITION_CONFIGURE)]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare(topics.PACKAGE), "config", topics.CONFIG_FILE])
    declared = [
        DeclareLaunchArgument(
            name, default_value=default_params if name == "params_file" else arg.default,
            description=arg.description, choices=list(arg.choices) or None)
        for name, arg in topics.LAUNCH_ARGUMENTS.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=launch_setup)])
