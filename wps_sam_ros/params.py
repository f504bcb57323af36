"""Node parameters without rclpy: ROS 2 params files and `--ros-args -p name:=value` for the DDS transport.

The rclpy node gets these from rcl; the ROS-less transport reads the same files and flags the same way
(values are YAML-parsed, `/**` and node-name sections), so one command line works with both.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from wps_sam_core.errors import WpsSamError
from wps_sam_core.io_utils import parse_yaml

from . import topics


def coerce(name: str, value: Any) -> Any:
    """Check a value against the parameter's declared type (the default's); ints are accepted for floats."""
    if name not in topics.PARAMETERS:
        raise WpsSamError(f"unknown parameter {name!r}; known: {', '.join(topics.PARAMETERS)}")
    default = topics.PARAMETERS[name].default
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise WpsSamError(f"parameter {name}: expected {type(default).__name__}, got {value!r}")
    return value


def check(name: str, value: Any) -> Any:
    """coerce + the parameter's choices and bounds: the one rule for every transport; returns the value."""
    value = coerce(name, value)
    spec = topics.PARAMETERS[name]
    if spec.choices and value not in spec.choices and not (spec.pattern and re.fullmatch(spec.pattern, value)):
        extra = f" or {spec.pattern}" if spec.pattern else ""
        raise WpsSamError(f"parameter {name}={value!r} is not one of {list(spec.choices)}{extra}")
    if spec.bounds and not spec.bounds[0] <= value <= spec.bounds[1]:
        raise WpsSamError(f"{name} must be in [{spec.bounds[0]:g}, {spec.bounds[1]:g}], got {value}")  # = the core's
    return value


def check_all(params: dict[str, Any]) -> dict[str, Any]:
    """check() on every known parameter in `params`; other names (rclpy's use_sim_time, ...) pass untouched."""
    return {name: check(name, value) if name in topics.PARAMETERS else value for name, value in params.items()}


def read_params_file(path: str | Path, node_name: str = topics.NODE_NAME, namespace: str = "") -> dict[str, Any]:
    """ros__parameters of the sections that apply to this node: `/**`, then its name (with namespace)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise WpsSamError(f"cannot read params file {path}: {exc.strerror}") from None
    doc = parse_yaml(text, f"params file {path}") or {}
    if not isinstance(doc, dict):
        raise WpsSamError(f"params file {path}: expected a mapping of node names to ros__parameters, "
                          f"got a {type(doc).__name__}")
    full_name = topics.resolve(node_name, namespace)
    wanted = ["/**", node_name, "/" + node_name, full_name, full_name.lstrip("/")]
    out: dict[str, Any] = {}
    for key in dict.fromkeys(wanted):
        section = doc.get(key)
        if isinstance(section, dict):
            params = section.get("ros__parameters")
            if not isinstance(params, dict):
                raise WpsSamError(f"{path}: section {key!r} has no ros__parameters mapping")
            out.update({name: check(name, value) for name, value in params.items()})
    return out


def parse_ros_args(argv: Sequence[str]) -> tuple[dict[str, Any], str, str]:
    """`--ros-args` subset: -p/--param name:=value, --params-file F, -r __ns:=/x, -r __node:=y.

    Returns (parameters with defaults filled in, node name, namespace). Later flags win, as in rcl.
    """
    node_name, namespace = topics.NODE_NAME, ""
    files: list[str] = []
    overrides: list[tuple[str, Any]] = []
    args, i = list(argv), 0
    in_ros_args = False
    while i < len(args):
        arg = args[i]
        if arg == "--ros-args":
            in_ros_args = True
        elif arg == "--":
            in_ros_args = False
        elif in_ros_args and arg in ("-p", "--param", "--params-file", "-r", "--remap"):
            if i + 1 >= len(args):
                raise WpsSamError(f"{arg} needs a value")
            value = args[i + 1]
            i += 1
            if arg == "--params-file":
                files.append(value)
            elif ":=" not in value:
                raise WpsSamError(f"{arg} {value!r}: expected name:=value")
            else:
                key, _, raw = value.partition(":=")
                if arg in ("-p", "--param"):
                    try:  # values are YAML, as in rcl; a parse error must name the flag, not be a traceback
                        overrides.append((key, yaml.safe_load(raw) if raw else ""))
                    except yaml.YAMLError:
                        raise WpsSamError(f"{arg} {value!r}: the value is not valid YAML; quote it, "
                                          f"e.g. {key}:='\"...\"'") from None
                elif key == "__ns":
                    namespace = raw
                elif key == "__node":
                    node_name = raw
                else:
                    raise WpsSamError(f"topic remapping {value!r} is not supported by the DDS transport; "
                                      f"use the image_topic parameter")
        elif in_ros_args:
            raise WpsSamError(f"unsupported ROS argument {arg!r} for the DDS transport")
        i += 1
    params = topics.defaults()
    for path in files:
        params.update(read_params_file(path, node_name, namespace))
    for key, value in overrides:
        params[key] = check(key, value)
    return params, node_name, namespace


def split_ros_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(own arguments, `--ros-args ...` and everything after it)."""
    argv = list(argv)
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        return argv[:i], argv[i:]
    return argv, []
