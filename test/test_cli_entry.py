"""The `wps-sam` entry point itself: a closed output pipe, the dataset flags every command shares."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wps_sam_core.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from wps_sam_core.data.world import write_world

    root = tmp_path_factory.mktemp("entry_world")
    write_world(root, 2, 1, 64, "val")
    return root


def run_into_closed_pipe(*argv: str) -> subprocess.CompletedProcess:
    """`wps-sam ARGV | head -0`, deterministically: stdout is a pipe whose reader has already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "wps_sam_core.cli", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(write_end)


@pytest.mark.parametrize("argv", [["dataset-info", "--split", "val"], ["--help"], ["eval", "--help"]],
                         ids=["dataset-info", "help", "subcommand-help"])
def test_a_closed_output_pipe_ends_quietly(world, argv):
    if argv[0] == "dataset-info":
        argv = [*argv, "--data", str(world)]
    proc = run_into_closed_pipe(*argv)
    # no traceback, no "Exception ignored"; 141 = 128 + SIGPIPE, like `yes | head` (argparse's help: its own 0)
    assert proc.stderr == "" and proc.returncode == (0 if "--help" in argv else 141), proc.stderr


def test_dataset_flags_are_named_alike_and_old_names_still_work(world, capsys, caplog):
    assert main(["dataset-info", "--data", str(world), "--split", "val"]) == 0
    new = json.loads(capsys.readouterr().out)
    assert main(["dataset-info", "--data-root", str(world), "--split", "val"]) == 0  # hidden deprecated alias
    assert json.loads(capsys.readouterr().out) == new
    assert "--data-root is deprecated; use --data" in caplog.text
    ann = str(world / "annotations" / "val" / "val.json")
    assert main(["dataset-info", "--annotations", ann, "--image-dir", str(world / "images" / "val")]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == new["images"]
    assert main(["dataset-info", "--annotations", ann, "--images", str(world / "images" / "val")]) == 0
    assert "--data-root" not in subprocess.run([sys.executable, "-m", "wps_sam_core.cli", "dataset-info", "--help"],
                                               capture_output=True, text=True, env={**os.environ,
                                               "PYTHONPATH": str(REPO)}).stdout
    assert main(["dataset-info", "--data", str(world), "--images", str(world)]) == 2
    assert "give either --data ROOT (with --split) or --annotations FILE --images DIR, not both" in \
        capsys.readouterr().err
