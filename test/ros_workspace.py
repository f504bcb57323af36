"""Skip rules of the launch tests, in one place: they need a sourced ROS 2 with launch_pytest, rclpy and
vision_msgs, and this package installed in that workspace (colcon build); CI has none and skips them."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest


def installed_package_or_skip() -> tuple[ModuleType, Path]:
    """(launch_pytest, the package's installed share folder), or a module-level skip with the reason."""
    launch_pytest = pytest.importorskip("launch_pytest", reason="launch_pytest missing: needs a sourced ROS 2 install")
    pytest.importorskip("rclpy", reason="rclpy missing: needs a sourced ROS 2 install")
    pytest.importorskip("vision_msgs", reason="vision_msgs missing: apt install ros-$ROS_DISTRO-vision-msgs")
    ament_index = pytest.importorskip("ament_index_python.packages", reason="ament_index_python missing")
    try:
        return launch_pytest, Path(ament_index.get_package_share_directory("wps_sam_ros"))
    except ament_index.PackageNotFoundError:
        pytest.skip("wps_sam_ros is not installed in the sourced workspace (colcon build)", allow_module_level=True)
