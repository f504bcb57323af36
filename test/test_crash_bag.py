"""SIGKILL during `wps-sam bag`, then rerun: the output never appears half-written, and the rerun writes the
same messages as an uninterrupted run (and clears the killed run's staging folder)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rosbags", reason="rosbags (pip) not installed")

from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: E402

from wps_sam_core.cli import main as wps_sam  # noqa: E402
from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.messages import MessageFactory, RosbagsBackend, ros2_typestore  # noqa: E402

from conftest import random_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FRAMES = 40


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_camera_bag(path: Path) -> None:
    store = ros2_typestore()
    factory = MessageFactory(RosbagsBackend(store))
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/camera/image_raw", topics.RAW_IMAGE_TYPE, typestore=store)
        for i in range(FRAMES):
            stamp = 1_700_000_000_000_000_000 + i * 33_000_000
            msg = factory.image(factory.header(stamp, "camera"), random_image(40, 56, i % 5), "rgb8")
            writer.write(conn, stamp, store.serialize_cdr(msg, topics.RAW_IMAGE_TYPE))


def bag_contents(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    out: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(path) as reader:
        for conn, timestamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((timestamp, bytes(raw)))
    return out


def test_sigkill_mid_bag_then_rerun_equals_uninterrupted(tmp_path, tiny_files):
    sam_path, prompter_path = tiny_files
    src, dst, ref = tmp_path / "in", tmp_path / "out", tmp_path / "ref"
    write_camera_bag(src)
    model = ["--prompter", str(prompter_path), "--sam-checkpoint", str(sam_path), "--device", "cpu",
             "--score-threshold", "0"]
    args = ["bag", str(src), str(dst), "--image-topic", "/camera/image_raw", *model]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "wps_sam_core.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, written_at = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            assert not dst.exists(), "the output appeared before the run finished"
            staged = [p for p in tmp_path.glob(".out.*.tmp/**/*") if p.is_file() and p.stat().st_size > 0]
            if staged and written_at is None:
                written_at = time.monotonic()
            if written_at is not None and time.monotonic() - written_at > 1.0:  # some frames into the bag
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    leftovers = list(tmp_path.glob(".out.*.tmp"))
    assert not dst.exists() and leftovers  # killed mid-write: only the hidden staging folder, never `out`

    assert wps_sam(args) == 0  # the rerun
    assert wps_sam(["bag", str(src), str(ref), "--image-topic", "/camera/image_raw", *model]) == 0  # uninterrupted
    assert not any(p.exists() for p in leftovers)  # the killed run's staging folder is cleared
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "ref"]
    got, want = bag_contents(dst), bag_contents(ref)
    assert {t: len(m) for t, m in got.items()} == {t: len(m) for t, m in want.items()}
    assert len(got["/parts/masks"]) == len(got["/camera/image_raw"]) == FRAMES
    assert got == want  # same timestamps and the same bytes, topic by topic
