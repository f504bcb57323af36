"""Distillation training end to end on a tiny SAM and a small part world (CPU)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from wps_sam_core.distill.trainer import STATE_FILE

from conftest import TINY_PROMPTER_YAML


def write_config(path, world, out_dir, sam_path, **extra):
    cfg = {
        "data": {"root": str(world), "train_split": "train", "supervision": "box", **extra.pop("data", {})},
        "model": {"sam_type": "tiny", "sam_checkpoint": str(sam_path), "prompter": TINY_PROMPTER_YAML},
        "optim": {"batch_size": 4, "max_steps": 6, "warmup_steps": 2, "lr": 1e-3, **extra.pop("optim", {})},
        "run": {"out_dir": str(out_dir), "log_every": 1, "ckpt_every": 2, "accelerator": "cpu", "progress": False,
                **extra.pop("run", {})},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "wps_sam_core.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=env, **kwargs)


def train_losses(out_dir) -> list[float]:
    with open(out_dir / "logs" / "metrics.csv") as handle:
        return [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, small_world, tiny_files):
    sam_path, _ = tiny_files
    out = tmp_path_factory.mktemp("cache") / "c"
    proc = cli("cache", "--data", small_world, "--split", "train", "--sam-type", "tiny", "--sam-checkpoint",
               sam_path, "--out", out, "--shard-size", "5", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    return out


def test_cache_training_matches_on_the_fly(tmp_path, small_world, tiny_files, cache_dir):
    sam_path, _ = tiny_files
    on_the_fly = write_config(tmp_path / "a.yaml", small_world, tmp_path / "a", sam_path)
    cached = write_config(tmp_path / "b.yaml", small_world, tmp_path / "b", sam_path, data={"cache_dir": str(cache_dir)})
    for config in (on_the_fly, cached):
        proc = cli("train", "--config", config)
        assert proc.returncode == 0, proc.stderr
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert len(a) == len(b) == 6
    assert b == pytest.approx(a, rel=2e-2)  # fp16 cache vs fp32 on-the-fly embeddings
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["steps"] == 6


def test_stale_cache_is_refused(tmp_path, small_world, cache_dir):
    config = write_config(tmp_path / "c.yaml", small_world, tmp_path / "c", "", data={"cache_dir": str(cache_dir)})
    text = yaml.safe_load(config.read_text())
    text["model"]["sam_checkpoint"] = ""  # random SAM weights: not the ones the cache was built with
    config.write_text(yaml.safe_dump(text))
    proc = cli("train", "--config", config)
    assert proc.returncode == 2 and "stale embedding cache" in proc.stderr and "Traceback" not in proc.stderr


def test_sigkill_then_resume_reaches_the_same_weights(tmp_path, small_world, tiny_files, cache_dir):
    sam_path, _ = tiny_files
    common = dict(data={"cache_dir": str(cache_dir), "hflip": False}, optim={"max_steps": 16, "batch_size": 2})
    reference = write_config(tmp_path / "ref.yaml", small_world, tmp_path / "ref", sam_path, **common)
    assert cli("train", "--config", reference).returncode == 0

    killed = write_config(tmp_path / "k.yaml", small_world, tmp_path / "k", sam_path, **common)
    proc = subprocess.Popen([sys.executable, "-m", "wps_sam_core.cli", "train", "--config", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "k" / STATE_FILE
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and torch.load(state, weights_only=True)["step"] >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = torch.load(state, weights_only=True)["step"]
    assert 0 < interrupted_at < 16, "the run should be killed mid-way"

    resumed = cli("train", "--config", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == 16
    assert not list((tmp_path / "k").glob(".*.tmp"))
    final, expected = load_file(tmp_path / "k" / "last.safetensors"), load_file(tmp_path / "ref" / "last.safetensors")
    assert final.keys() == expected.keys()
    assert all(torch.allclose(final[k], expected[k], atol=1e-6) for k in expected)


def test_two_process_ddp_trains_and_writes_one_checkpoint(tmp_path, small_world, tiny_files, cache_dir):
    sam_path, _ = tiny_files
    config = write_config(tmp_path / "ddp.yaml", small_world, tmp_path / "ddp", sam_path,
                          data={"cache_dir": str(cache_dir)}, optim={"max_steps": 3, "batch_size": 2},
                          run={"devices": 2, "ckpt_every": 100})
    env = {**os.environ, "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    proc = cli("train", "--config", config, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ddp" / "last.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "ddp").glob("*.safetensors")) == ["last.safetensors"]
    assert torch.load(tmp_path / "ddp" / STATE_FILE, weights_only=True)["step"] == 3


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: fast}\ndata: {root: /x}\n")
    proc = cli("train", "--config", bad)
    assert proc.returncode == 2 and "optim.lr: expected a number" in proc.stderr
    proc = cli("train", "--config", bad, "--set", "optim.lr=1e-4", "--set", "data.supervision=masks")
    assert proc.returncode == 2 and "data.supervision must be one of" in proc.stderr
