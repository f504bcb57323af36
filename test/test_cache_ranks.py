"""`wps-sam cache` on several processes (real processes, CPU, gloo, the tiny SAM): the same bytes as one process;
a 2-process build killed (SIGKILL of its process group) resumes, with 2 or with 1 process, to the same cache and
redoes no finished shard; the manifest never appears before every shard is there; an error on one rank stops all
of them with one line, never a hang."""
from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wps_sam_core.cli import main
from wps_sam_core.distill.cache import BUILD_FILE, EmbeddingCache, shard_name

ENTRIES = 24  # small_world's 12 train images and their flips, one per shard: 12 rounds of 2 shards
ENV = {**{k: v for k, v in os.environ.items() if k != "MASTER_PORT"},  # Lightning picks a free port
       "OMP_NUM_THREADS": "1"}  # the same per-process math as one_torch_thread in this process


def cache_args(world, sam_path, out, *extra) -> list[str]:
    return ["cache", "--data", str(world), "--split", "train", "--sam-type", "tiny", "--sam-checkpoint", str(sam_path),
            "--out", str(out), "--shard-size", "1", "--batch-size", "1", "--hflip", "--accelerator", "cpu",
            "--no-progress", *map(str, extra)]


class Run:
    """`wps-sam cache` in its own process group (to kill it whole), its output in files (no pipe to fill)."""

    def __init__(self, args: list[str], logs) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out, self.err = logs / "stdout", logs / "stderr"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "wps_sam_core.cli", *args], stdout=out, stderr=err,
                                         env=ENV, start_new_session=True)

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        code = self.proc.wait(timeout)  # a hang would end here
        return code, self.out.read_text(), self.err.read_text()

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # rank 0 and the ranks it started
        self.proc.wait()


def shards(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("shard_*.safetensors"))


def watch(proc: Run, folder, until=lambda: False, limit_s: float = 120) -> list[int]:
    """Poll `folder` until the process ends or `until()`; the shard counts seen whenever a manifest was there."""
    seen, deadline = [], time.monotonic() + limit_s
    while proc.poll() is None and not until() and time.monotonic() < deadline:
        if (folder / "manifest.json").exists():
            seen.append(len(shards(folder)))
        time.sleep(0.005)
    return seen


def same_cache(a, b) -> None:
    """Manifests equal and every shard file the same bytes (so every entry is)."""
    assert json.loads((a / "manifest.json").read_text()) == json.loads((b / "manifest.json").read_text())
    assert shards(a) == shards(b) and len(shards(a)) == ENTRIES
    for name in shards(b):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert not (a / BUILD_FILE).exists() and not list(a.glob(".*.tmp"))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, small_world, tiny_files, one_torch_thread):
    out = tmp_path_factory.mktemp("one") / "c"
    assert main(cache_args(small_world, tiny_files[0], out)) == 0
    return out


def test_two_processes_write_the_same_bytes_as_one_and_the_manifest_last(tmp_path, small_world, tiny_files,
                                                                         one_process):
    proc = Run(cache_args(small_world, tiny_files[0], tmp_path / "two", "--devices", 2), tmp_path / "logs")
    seen = watch(proc, tmp_path / "two")
    code, out, err = proc.wait()
    assert code == 0, err[-3000:]
    assert seen and set(seen) == {ENTRIES}, "a manifest appeared before every shard was written"
    summary = json.loads(out)  # one line: rank 0's
    assert summary.pop("seconds") > 0
    assert summary == {"cache": str(tmp_path / "two"), "entries": ENTRIES, "complete": True, "processes": 2}
    assert err.count("caching 24 entries in 24 shards on 2 process(es)") == 1  # rank 0 speaks, once
    same_cache(tmp_path / "two", one_process)
    cache, ref = EmbeddingCache(tmp_path / "two"), EmbeddingCache(one_process)
    for entry in ref.entries:
        assert torch.equal(cache.get(entry.key, entry.variant)[0], ref.get(entry.key, entry.variant)[0])


def test_killed_two_process_build_resumes_with_two_or_one_process(tmp_path, small_world, tiny_files, one_process):
    killed = tmp_path / "killed"
    proc = Run(cache_args(small_world, tiny_files[0], killed, "--devices", 2), tmp_path / "logs")
    seen = watch(proc, killed, until=lambda: len(shards(killed)) >= 1)
    proc.kill()
    assert not seen and not (killed / "manifest.json").exists()
    done = shards(killed)
    assert 0 < len(done) < ENTRIES and (killed / BUILD_FILE).is_file(), "killed mid-way"
    stamps = {name: (killed / name).stat().st_mtime_ns for name in done}
    shutil.copytree(killed, tmp_path / "killed_copy")

    resumed = Run(cache_args(small_world, tiny_files[0], killed, "--devices", 2), tmp_path / "logs2")
    assert set(watch(resumed, killed)) <= {ENTRIES}
    code, _, err = resumed.wait()
    assert code == 0, err[-3000:]
    assert f"resuming cache {killed}: {len(done)} of {ENTRIES} shards already done" in err
    assert {name: (killed / name).stat().st_mtime_ns for name in done} == stamps  # not redone
    same_cache(killed, one_process)

    assert main(cache_args(small_world, tiny_files[0], tmp_path / "killed_copy")) == 0  # another number of processes
    same_cache(tmp_path / "killed_copy", one_process)


def test_an_error_on_one_rank_stops_every_rank_with_one_line(tmp_path, small_world, tiny_files):
    world = tmp_path / "world"
    shutil.copytree(small_world, world)
    images = sorted((world / "images" / "train").iterdir())
    images[1].write_bytes(b"not a png")  # with 2 entries a shard (image, flip): shard 1, rank 1's
    started = time.monotonic()
    code, out, err = Run(cache_args(world, tiny_files[0], tmp_path / "c", "--devices", 2, "--shard-size", 2),
                         tmp_path / "logs").wait()
    assert code == 2 and not out
    lines = [line for line in err.splitlines() if line.startswith("wps-sam cache: error:")]
    assert lines == [f"wps-sam cache: error: rank 1: cannot decode image (truncated or not an image): {images[1]}"], \
        err[-3000:]
    assert "Traceback" not in err
    assert time.monotonic() - started < 60
    assert not (tmp_path / "c" / "manifest.json").exists()
    assert shards(tmp_path / "c") == [shard_name(0)]  # rank 0's shard of that round: kept for a rerun


MISMATCH_SCRIPT = """
import sys, torch
from wps_sam_core.distill.cache import provenance_for
from wps_sam_core.distill.cache_build import build_cache
from wps_sam_core.distill.processes import launch, make_fabric
from wps_sam_core.errors import WpsSamError
from wps_sam_core.modeling.sam import load_sam

fabric = make_fabric("cpu", devices=2)
launch(fabric)
torch.manual_seed(fabric.global_rank)  # as if each node read another checkpoint file
sam = load_sam("tiny")
items = [(f"img{i}.png", lambda: torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()) for i in range(4)]
try:
    build_cache(sys.argv[1], sam, provenance_for(sam, "tiny"), items, shard_size=1, progress=False, fabric=fabric)
except WpsSamError as exc:
    print(exc)
"""


def test_processes_with_other_encoder_weights_are_refused(tmp_path):
    script = tmp_path / "mismatch.py"
    script.write_text(MISMATCH_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "c")], capture_output=True, text=True,
                          env={**ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]  # rank 0 caught the error; rank 1 exited 2 quietly
    assert "Traceback" not in proc.stderr
    assert re.fullmatch(r"the processes do not run the same SAM encoder: rank 1 has sam_weights_sha256 '[0-9a-f]{64}', "
                        r"rank 0 '[0-9a-f]{64}'; every node must read the same --sam-checkpoint\n", proc.stdout)
    assert not (tmp_path / "c").exists()  # refused before anything is written
