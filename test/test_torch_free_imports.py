"""The ROS side's configuration modules and the core's errors import on a machine without torch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A meta-path finder that refuses torch (and what needs it), as on a machine where it is not installed.
BLOCK_TORCH = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "segment_anything"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, NoTorch())
"""


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, timeout=120,
                          cwd=REPO)


def test_config_modules_import_without_torch():
    proc = run_without_torch(
        "import wps_sam_ros.topics, wps_sam_ros.params, wps_sam_ros.conversions, wps_sam_ros.messages\n"
        "import wps_sam_core.errors\n"
        "from wps_sam_core import WpsSamError\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'segment_anything'))\n"
        "assert not loaded, loaded\n"
        "print('ok')\n")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_the_block_is_real():
    proc = run_without_torch("import wps_sam_core.segmenter\n")
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr


def test_lift_to_3d_runs_without_torch():
    """The 3D lifting is numpy only: the DDS/bag side and offline users need no torch for it."""
    proc = run_without_torch(
        "import numpy as np\n"
        "from types import SimpleNamespace\n"
        "from wps_sam_core import CameraIntrinsics, lift_to_3d, part_points\n"
        "ids = np.zeros((4, 6), np.uint16); ids[1:3, 2:4] = 1\n"
        "inst = SimpleNamespace(instance_id=1, class_id=1, class_name='mug_handle', score=0.9)\n"
        "seg = SimpleNamespace(labels=ids.astype(np.uint8), instance_ids=ids, instances=[inst], class_names=['mug_handle'])\n"
        "k = CameraIntrinsics.from_matrix([100, 0, 2.0, 0, 100, 1.5, 0, 0, 1], 6, 4)\n"
        "part, = lift_to_3d(seg, np.full((4, 6), 1000, np.uint16), k, 0.001).parts\n"
        "assert abs(part.centre[2] - 1.0) < 1e-9 and abs(part.centre[0] - 0.005) < 1e-9, part\n"
        "assert part_points(seg, np.ones((4, 6), np.float32), k).size == 4\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'segment_anything'))\n"
        "assert not loaded, loaded\n"
        "print('ok')\n")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
