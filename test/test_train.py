"""Distillation training end to end on a tiny SAM and a small part world (CPU): cache vs on the fly, exact
resume after SIGKILL (weights and metrics.csv), DDP, the run folder's guards and what a run logs."""
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


def csv_rows(out_dir) -> list[dict]:
    with open(out_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def train_losses(out_dir) -> list[float]:
    return [float(row["train/loss_total"]) for row in csv_rows(out_dir) if row.get("train/loss_total")]


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
    text["model"]["sam_checkpoint"] = "random"  # random SAM weights, asked for: not the ones the cache was built with
    config.write_text(yaml.safe_dump(text))
    proc = cli("train", "--config", config)
    assert proc.returncode == 2 and "stale embedding cache" in proc.stderr and "Traceback" not in proc.stderr


def test_sigkill_then_resume_reaches_the_same_weights_and_keeps_the_metrics(tmp_path, small_world, tiny_files, cache_dir):
    sam_path, _ = tiny_files
    common = dict(data={"cache_dir": str(cache_dir), "hflip": False}, optim={"max_steps": 16, "batch_size": 2})
    reference = write_config(tmp_path / "ref.yaml", small_world, tmp_path / "ref", sam_path, **common)
    assert cli("train", "--config", reference).returncode == 0

    killed = write_config(tmp_path / "k.yaml", small_world, tmp_path / "k", sam_path, **common)
    proc = subprocess.Popen([sys.executable, "-m", "wps_sam_core.cli", "train", "--config", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "k" / STATE_FILE
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # wait for rows and a checkpoint, never a fixed sleep
        if state.exists() and torch.load(state, weights_only=True)["step"] >= 4 and len(csv_rows(tmp_path / "k")) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = torch.load(state, weights_only=True)["step"]
    assert 0 < interrupted_at < 16, "the run should be killed mid-way"
    before = csv_rows(tmp_path / "k")  # written as it went: the run never ended
    assert [int(r["step"]) for r in before][:interrupted_at] == list(range(1, interrupted_at + 1))

    resumed = cli("train", "--config", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == 16
    assert not list((tmp_path / "k").glob(".*.tmp"))
    final, expected = load_file(tmp_path / "k" / "last.safetensors"), load_file(tmp_path / "ref" / "last.safetensors")
    assert final.keys() == expected.keys()
    assert all(torch.allclose(final[k], expected[k], atol=1e-6) for k in expected)
    after = csv_rows(tmp_path / "k")
    assert [int(r["step"]) for r in after] == list(range(1, 17))  # one history: rows after the checkpoint replaced
    assert after[:interrupted_at] == before[:interrupted_at]  # the rows before the kill, as they were
    assert train_losses(tmp_path / "k") == pytest.approx(train_losses(tmp_path / "ref"), rel=1e-5)


def test_two_process_ddp_trains_and_writes_one_checkpoint(tmp_path, small_world, tiny_files, cache_dir):
    sam_path, _ = tiny_files
    config = write_config(tmp_path / "ddp.yaml", small_world, tmp_path / "ddp", sam_path,
                          data={"cache_dir": str(cache_dir)}, optim={"max_steps": 3, "batch_size": 2},
                          run={"devices": 2, "ckpt_every": 100})
    env = {**os.environ, "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    proc = cli("train", "--config", config, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # one line: rank 0's
    assert summary["final_loss_is"] == "train/loss_total of step 3, mean over 2 rank(s)"
    assert proc.stderr.count("config (saved as") == 1 and proc.stderr.count("weak labels") == 1
    assert "Seed set" not in proc.stderr
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
    bad.write_text("data: {root: /x}\noptim: {lr: 1e-4\nrun: {seed: 1}\n")
    proc = cli("train", "--config", bad)
    assert proc.returncode == 2 and "invalid YAML at line 3, column 4" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_sam_checkpoint_is_a_path_or_random_by_name(tmp_path, small_world):
    config = write_config(tmp_path / "c.yaml", small_world, tmp_path / "c", "")
    proc = cli("train", "--config", config)  # nothing given: no silent random SAM
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "model.sam_checkpoint" in proc.stderr and "random" in proc.stderr
    proc = cli("train", "--config", config, "--set", f"model.sam_checkpoint={tmp_path / 'nope.pth'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"model.sam_checkpoint: checkpoint not found: {tmp_path / 'nope.pth'}" in proc.stderr
    assert not (tmp_path / "c").exists()  # refused before anything is written
