"""One source of truth: config/part_seg.yaml, the launch file, the docs tables and the DDS argument parser
all agree with wps_sam_ros/topics.py."""
from __future__ import annotations

import argparse
import ast
import fnmatch
from pathlib import Path

import pytest
import yaml

from wps_sam_core.errors import WpsSamError
from wps_sam_core.segmenter import SegmenterSettings
from wps_sam_ros import topics
from wps_sam_ros.params import check, check_all, parse_ros_args, read_params_file, split_ros_args

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / topics.CONFIG_FILE
LAUNCH = REPO / "launch" / topics.LAUNCH_FILE
DOCS = [REPO / "README.md"]


def _cell(value) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`" if value != "" else '`""`'


def topic_rows() -> list[str]:
    return [f"| `{topics.resolve(spec.name)}` | `{spec.msg_type}` | {spec.qos.reliability}, {spec.qos.durability}, "
            f"depth {spec.qos.depth} | {spec.description} |" for spec in topics.OUTPUT_TOPICS.values()]


def parameter_rows() -> list[str]:
    return [f"| `{name}` | {_cell(spec.default)} | {'yes' if spec.runtime else 'no'} | {spec.description} |"
            for name, spec in topics.PARAMETERS.items()]


def launch_rows() -> list[str]:
    return [f"| `{name}` | {_cell(arg.default)} | {', '.join(_cell(c) for c in arg.choices) or '-'} | {arg.description} |"
            for name, arg in topics.LAUNCH_ARGUMENTS.items()]


def test_yaml_equals_topics_defaults_with_types():
    doc = yaml.safe_load(CONFIG.read_text())
    params = doc["/**"]["ros__parameters"]
    assert params == topics.defaults()
    for name, value in params.items():  # rcl is strict about types: 0.0 must not become 0
        assert type(value) is type(topics.PARAMETERS[name].default), name
    assert read_params_file(CONFIG) == topics.defaults()


def test_defaults_equal_the_segmenter_and_cli_defaults():
    from wps_sam_core.cli import build_parser
    from wps_sam_core.cli.common import add_model_args
    from wps_sam_core.modeling.sam import SAM_CONFIGS
    from wps_sam_core.segmenter import DEFAULT_DEVICE, DEFAULT_PRECISION, OVERLAP_ORDERS, PRECISIONS

    settings = SegmenterSettings()
    assert topics.PARAMETERS["score_threshold"].default == settings.score_threshold
    assert topics.PARAMETERS["mask_threshold"].default == settings.mask_threshold
    assert topics.PARAMETERS["max_instances"].default == settings.max_instances
    assert topics.parse_class_filter(topics.PARAMETERS["class_filter"].default) == settings.class_filter
    assert topics.OVERLAP_CHOICES == OVERLAP_ORDERS and topics.PARAMETERS["overlap"].default == settings.overlap
    assert topics.PARAMETERS["dedup_iou"].default == settings.dedup_iou and topics.PARAMETERS["dedup_iou"].runtime
    assert set(topics.PRECISION_CHOICES) == {"fp32", "bf16", "fp16"} and "tiny" in SAM_CONFIGS
    assert topics.PRECISION_CHOICES == tuple(PRECISIONS) and topics.PARAMETERS["precision"].default == DEFAULT_PRECISION
    assert topics.PARAMETERS["device"].default == DEFAULT_DEVICE

    # the CLI's model flags (wps-sam predict, eval, export, bag): the same defaults and choices
    args = build_parser().parse_args(["predict", "image.png", "--out", "out"])
    assert (args.score_threshold, args.mask_threshold, args.max_instances, args.overlap, args.dedup_iou) == (
        settings.score_threshold, settings.mask_threshold, settings.max_instances, settings.overlap, settings.dedup_iou)
    assert (args.device, args.precision) == (DEFAULT_DEVICE, DEFAULT_PRECISION)
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    flags = {action.dest: action for action in parser._actions}
    assert tuple(flags["precision"].choices) == tuple(PRECISIONS) == topics.PRECISION_CHOICES
    assert tuple(flags["overlap"].choices) == OVERLAP_ORDERS


def test_launch_arguments_are_the_documented_set_and_match_the_parameters():
    assert set(topics.LAUNCH_ARGUMENTS) == {"image_topic", "image_transport", "input_qos", "params_file",
                                            "sam_checkpoint", "prompter_checkpoint", "device", "use_sim_time",
                                            "namespace", "use_lifecycle", "autostart", "backend", "onnx_dir",
                                            "depth_topic", "camera_info_topic"}
    assert topics.LAUNCH_ARGUMENTS["params_file"].default == "$(find-pkg-share wps_sam_ros)/config/part_seg.yaml"
    for name in topics.PARAMETER_ARGUMENTS:
        assert name in topics.PARAMETERS
        arg = topics.LAUNCH_ARGUMENTS[name]
        assert arg.default == ""  # empty: keep the params_file value
        assert repr(topics.PARAMETERS[name].default) in arg.description
        if topics.PARAMETERS[name].choices and not topics.PARAMETERS[name].pattern:
            assert arg.choices == ("", *topics.PARAMETERS[name].choices)
    # device:=cuda:1 is valid for the node: the launch argument must not refuse it with a closed list
    assert topics.LAUNCH_ARGUMENTS["device"].choices == ()
    assert topics.LAUNCH_ARGUMENTS["use_sim_time"].choices == ("", "true", "false")
    for arg in topics.LAUNCH_ARGUMENTS.values():
        assert not arg.choices or arg.default in arg.choices


def test_launch_file_uses_topics_and_real_launch_apis():
    tree = ast.parse(LAUNCH.read_text())
    imported = {(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert {("launch", "LaunchDescription"), ("launch.actions", "DeclareLaunchArgument"),
            ("launch_ros.actions", "Node"), ("launch_ros.actions", "LifecycleNode"),
            ("launch_ros.substitutions", "FindPackageShare"), ("launch_ros.events.lifecycle", "ChangeState"),
            ("wps_sam_ros", "topics")} <= imported
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    source = LAUNCH.read_text()
    for needle in ("topics.LAUNCH_ARGUMENTS", "topics.PARAMETER_ARGUMENTS", "topics.CONFIG_FILE",
                   "topics.EXECUTABLE", "TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"):
        assert needle in source
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not literals & {"/camera/image_raw", "auto", "part_seg", "part_seg_node"}  # no second copy of a default


def test_setup_py_installs_the_launch_and_config_files():
    setup = (REPO / "setup.py").read_text()
    assert '"launch/*.launch.py"' in setup and '"config/*.yaml"' in setup
    assert fnmatch.fnmatch(f"launch/{LAUNCH.name}", "launch/*.launch.py")
    assert fnmatch.fnmatch(f"config/{CONFIG.name}", "config/*.yaml")
    assert f"{topics.EXECUTABLE} = wps_sam_ros.node:main" in setup


def test_docs_tables_match_the_code():
    docs = [p for p in DOCS if p.is_file() and "<!-- topics table -->" in p.read_text()]
    assert docs, "no README section with the topics table"
    for path in docs:
        lines = set(path.read_text().splitlines())
        for row in topic_rows() + parameter_rows() + launch_rows():
            assert row in lines, f"{path.name} lacks or differs from:\n{row}"


def test_dds_argument_parser_reads_ros_args():
    own, ros = split_ros_args(["--domain-id", "3", "--ros-args", "--params-file", str(CONFIG),
                               "-p", "score_threshold:=0.7", "-p", "max_instances:=3", "-p", "class_filter:=a,b",
                               "-r", "__ns:=/robot1"])
    assert own == ["--domain-id", "3"]
    params, name, namespace = parse_ros_args(ros)
    assert params["score_threshold"] == 0.7 and params["max_instances"] == 3 and params["class_filter"] == "a,b"
    assert params["device"] == "auto" and (name, namespace) == ("part_seg", "/robot1")
    assert parse_ros_args(["--ros-args", "-p", "mask_threshold:=1"])[0]["mask_threshold"] == 1.0  # int -> double
    with pytest.raises(WpsSamError, match="max_instances"):
        parse_ros_args(["--ros-args", "-p", "max_instances:=many"])
    with pytest.raises(WpsSamError, match="unknown parameter 'nope'"):
        parse_ros_args(["--ros-args", "-p", "nope:=1"])


@pytest.mark.parametrize("flag, message", [
    ("score_threshold:=high", "parameter score_threshold: expected float, got 'high'"),
    ("max_instances:=2.5", "parameter max_instances: expected int, got 2.5"),
    ("publish_overlay:=1", "parameter publish_overlay: expected bool, got 1"),
    ("diagnostics_period:=0", r"diagnostics_period must be in \[0.01, 3600\], got 0.0"),
    ("diagnostics_period:=-1.0", r"diagnostics_period must be in \[0.01, 3600\], got -1.0"),
    ("score_threshold:=1.5", r"score_threshold must be in \[0, 1\], got 1.5"),
    ("max_instances:=0", r"max_instances must be in \[1, 65535\], got 0"),
    ("device:=gpu", r"device='gpu' is not one of \['auto', 'cuda', 'cpu'\] or cuda:\\d\+"),
    ("overlap:=biggest", "overlap='biggest' is not one of"),
])
def test_every_bad_parameter_value_is_one_line_naming_it(flag, message):
    with pytest.raises(WpsSamError, match=message) as info:
        parse_ros_args(["--ros-args", "-p", flag])
    assert "\n" not in str(info.value)


def test_check_accepts_what_rcl_yaml_spells_differently():
    assert check("score_threshold", 1) == 1.0 and isinstance(check("score_threshold", 1), float)
    assert check("mask_threshold", 0) == 0.0 and check("diagnostics_period", 0.01) == 0.01
    assert check("device", "cuda:1") == "cuda:1" and check("device", "cpu") == "cpu"
    # other nodes' parameters (rclpy's use_sim_time) are not this package's to judge
    assert check_all({"use_sim_time": True, "max_instances": 3}) == {"use_sim_time": True, "max_instances": 3}


def test_every_bounded_parameter_default_is_inside_its_bounds():
    bounded = {name: spec for name, spec in topics.PARAMETERS.items() if spec.bounds}
    assert {"score_threshold", "max_instances", "diagnostics_period"} <= set(bounded)
    assert topics.PARAMETERS["diagnostics_period"].bounds[0] > 0  # 0 = an always-ready rcl timer
    for name, spec in bounded.items():
        assert check(name, spec.default) == spec.default
    # the segmenter's own limits are the same numbers (topics.py stays torch-free, so they are written twice)
    for name in ("score_threshold", "max_instances"):
        low, high = topics.PARAMETERS[name].bounds
        cast = type(topics.PARAMETERS[name].default)
        SegmenterSettings(**{name: cast(low)}).validated([])
        SegmenterSettings(**{name: cast(high)}).validated([])
        for outside in (cast(low) - 1, cast(high) + 1):
            with pytest.raises(WpsSamError, match=name):
                SegmenterSettings(**{name: outside}).validated([])


def test_tracking_parameters_are_the_trackers_settings():
    import dataclasses

    from wps_sam_core.cli import build_parser
    from wps_sam_core.postprocess.tracking import TrackerSettings
    from wps_sam_ros.core import TRACKER_PARAMETERS, tracker_settings_from_parameters

    assert topics.PARAMETERS["tracking"].default is False and topics.PARAMETERS["tracking"].runtime
    assert set(TRACKER_PARAMETERS.values()) == {f.name for f in dataclasses.fields(TrackerSettings)}
    assert tracker_settings_from_parameters(topics.defaults()) == TrackerSettings()  # same defaults
    args = build_parser().parse_args(["bag", "in", "out", "--image-topic", "/cam"])  # and the bag's flags
    assert not args.tracking
    assert all(getattr(args, f) == getattr(TrackerSettings(), f) for f in TRACKER_PARAMETERS.values())
    for name, field in TRACKER_PARAMETERS.items():  # run-time, bounded by what the tracker accepts
        spec = topics.PARAMETERS[name]
        assert spec.runtime and spec.bounds and check(name, spec.default) == spec.default
        cast = type(spec.default)
        low, high = (cast(b) for b in spec.bounds)
        TrackerSettings(**{field: low})
        TrackerSettings(**{field: high})
        with pytest.raises(WpsSamError, match=field):
            TrackerSettings(**{field: low - 1})
    with pytest.raises(WpsSamError, match=r"track_match_iou must be in \[0.01, 1\], got 0.0"):
        parse_ros_args(["--ros-args", "-p", "track_match_iou:=0"])
    with pytest.raises(WpsSamError, match="parameter tracking: expected bool, got 'maybe'"):
        parse_ros_args(["--ros-args", "-p", "tracking:=maybe"])
    params = parse_ros_args(["--ros-args", "-p", "tracking:=true", "-p", "track_reset_s:=0"])[0]
    assert params["tracking"] is True and params["track_reset_s"] == 0.0


def test_depth_parameters_and_the_camera_info_rule():
    assert topics.PARAMETERS["depth_topic"].default == ""  # 2D only unless asked
    assert not topics.PARAMETERS["depth_scale_to_image"].default and topics.PARAMETERS["publish_points"].runtime
    # image_transport's CameraSubscriber rule: camera_info next to the image
    assert topics.camera_info_topic("/camera/camera/aligned_depth_to_color/image_raw") == \
        "/camera/camera/aligned_depth_to_color/camera_info"
    assert topics.camera_info_topic("depth/image_rect_raw") == "depth/camera_info"
    assert topics.camera_info_topic("depth") == "camera_info" and topics.camera_info_topic("/depth") == "/camera_info"
    assert topics.camera_info_topic("/d/image", "/calib/info") == "/calib/info"
    with pytest.raises(WpsSamError, match=r"sync_slop_s must be in \[0.0001, 10\], got 0.0"):
        parse_ros_args(["--ros-args", "-p", "sync_slop_s:=0"])  # message_filters pairs strictly within slop
    with pytest.raises(WpsSamError, match=r"sync_queue_size must be in \[1, 1000\], got 0"):
        parse_ros_args(["--ros-args", "-p", "sync_queue_size:=0"])


def test_params_file_sections(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    device: cpu\n"
                    "/robot1/part_seg:\n  ros__parameters:\n    score_threshold: 0.9\n"
                    "other_node:\n  ros__parameters:\n    device: cuda\n")
    assert read_params_file(path) == {"device": "cpu"}
    assert read_params_file(path, namespace="robot1") == {"device": "cpu", "score_threshold": 0.9}
    path.write_text("/**:\n  ros__parameters:\n    publish_overlay: 3\n")
    with pytest.raises(WpsSamError, match="publish_overlay"):
        read_params_file(path)


if __name__ == "__main__":  # print the docs tables: python3 test/test_ros_config.py
    print("\n".join(topic_rows()), "\n\n" + "\n".join(parameter_rows()), "\n\n" + "\n".join(launch_rows()))


def test_params_file_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("/**:\n  ros__parameters:\n    device: [cpu\n")
    with pytest.raises(WpsSamError, match=r"invalid YAML at line 4, column 1: expected ',' or ']'") as info:
        read_params_file(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_backend_parameters_equal_the_core_and_cli_defaults():
    from wps_sam_core.backends import BACKENDS, DEFAULT_BACKEND, DEFAULT_PROVIDERS
    from wps_sam_core.cli import build_parser

    assert topics.BACKEND_CHOICES == BACKENDS and topics.PARAMETERS["backend"].default == DEFAULT_BACKEND
    assert topics.PARAMETERS["onnx_providers"].default == DEFAULT_PROVIDERS
    for name in ("backend", "onnx_dir", "onnx_providers", "onnx_threads"):
        assert not topics.PARAMETERS[name].runtime  # the model is built once, at start
    for command in (["predict", "image.png", "--out", "out"], ["eval", "--data", "d", "--json", "r.json"]):
        args = build_parser().parse_args(command)
        assert (args.backend, args.onnx_dir, args.onnx_providers, args.onnx_threads) == (
            DEFAULT_BACKEND, topics.PARAMETERS["onnx_dir"].default, DEFAULT_PROVIDERS,
            topics.PARAMETERS["onnx_threads"].default)
