"""`colcon build` of a copy of the repository installs what `ros2 run` / `ros2 launch` look for."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wps_sam_ros import topics

REPO = Path(__file__).resolve().parents[1]
COLCON = shutil.which("colcon")


def repo_files() -> list[str]:
    """Tracked and not-ignored files (so build/ install/ log/ and caches are left out)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True)
    return [name for name in out.stdout.decode().split("\0") if name and (REPO / name).is_file()]


@pytest.mark.skipif(COLCON is None, reason="colcon not installed (pip install colcon-common-extensions)")
@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout: cannot list the tracked files")
def test_colcon_build_installs_node_launch_and_config(tmp_path):
    src = tmp_path / "src" / topics.PACKAGE
    for name in repo_files():
        if name.startswith(("test/", "training/", "benchmarks/", "examples/")):
            continue  # not part of the installed package; keeps the copy small
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLCON")}
    result = subprocess.run(
        [COLCON, "--log-base", "log", "build", "--base-paths", "src", "--build-base", "build",
         "--install-base", "install", "--event-handlers", "console_direct-"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # colcon prints a package's stderr as a warning block; setup.py must give it nothing to say
    assert "Unknown distribution option" not in result.stdout + result.stderr, result.stderr[-3000:]
    prefix = tmp_path / "install" / topics.PACKAGE
    node = prefix / "lib" / topics.PACKAGE / topics.EXECUTABLE
    launch = prefix / "share" / topics.PACKAGE / "launch" / topics.LAUNCH_FILE
    config = prefix / "share" / topics.PACKAGE / "config" / topics.CONFIG_FILE
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / topics.PACKAGE
    for path in (node, launch, config, marker, prefix / "share" / topics.PACKAGE / "package.xml"):
        assert path.is_file(), f"colcon did not install {path.relative_to(tmp_path)}"
    assert os.access(node, os.X_OK)
    assert launch.read_text() == (REPO / "launch" / topics.LAUNCH_FILE).read_text()
    assert config.read_text() == (REPO / "config" / topics.CONFIG_FILE).read_text()

    # the installed console script runs from the install space (not from this checkout)
    site = next((prefix / "lib").glob("python3*/site-packages"))
    run_env = {**env, "PYTHONPATH": f"{site}{os.pathsep}{env.get('PYTHONPATH', '')}"}
    probe = subprocess.run([str(node), "--help"], cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and "--transport" in probe.stdout, probe.stderr[-2000:]
    where = subprocess.run([sys.executable, "-c", "import wps_sam_ros.topics as t; print(t.__file__)"], cwd=tmp_path,
                           env=run_env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip().startswith(str(site))
