"""The run folder and what a run tells: an old run is never overwritten silently, --resume names (and applies or
refuses) config changes, config.yaml / console / TensorBoard, early stopping and the metric that picks best."""
from __future__ import annotations

import json

import pytest
import yaml
from wps_sam_core.checkpoint import load_prompter_checkpoint
from wps_sam_core.distill.trainer import lr_factor

from test_train import cli, csv_rows, write_config


def best_info(out_dir) -> dict:
    return load_prompter_checkpoint(out_dir / "best.safetensors").info


def test_a_run_says_what_it_does_and_is_never_overwritten_silently(tmp_path, small_world, tiny_files):
    sam_path, _ = tiny_files
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", small_world, out, sam_path, data={"val_split": "val"},
                          optim={"max_steps": 4}, run={"val_every": 2, "log_every": 2, "progress": True})
    first = cli("train", "--config", config)
    assert first.returncode == 0, first.stderr
    err = first.stderr
    assert "\r" not in err  # the progress bar is for a TTY; a file gets lines
    assert "step 2/4 (50.0 %)" in err and "step/s" in err and "ETA" in err
    assert err.count("Seed set") == 0 and "seed 42" in err
    assert "step 2: val mIoU " in err and " %, paper mIoU " in err and "saved best (step 2, mIoU " in err
    assert "weak labels (boxes, seed 42)" in err
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["data"]["root"] == str(small_world) and stored["optim"]["max_steps"] == 4
    assert f"config (saved as {out / 'config.yaml'})" in err and "max_steps: 4" in err
    rows = csv_rows(out)
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert {"train/loss_total", "train/loss_last", "train/loss_ce", "train/loss_token", "val/mIoU"} <= set(rows[0])
    for row in rows:  # dec_layers 2 with aux_loss: the total sums both layers' losses, the last is one of them
        assert float(row["train/loss_total"]) > float(row["train/loss_last"]) > 0

    (out / "cache_train").mkdir()  # what the shipped scripts keep in the run folder: never removed
    (out / "cache_train" / "manifest.json").write_text("{}")
    best = (out / "best.safetensors").read_bytes()
    again = cli("train", "--config", config)
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr
    assert "holds a previous run" in again.stderr and "--resume" in again.stderr and "--overwrite" in again.stderr
    assert (out / "best.safetensors").read_bytes() == best and len(csv_rows(out)) == 2

    both = cli("train", "--config", config, "--resume", "--overwrite")
    assert both.returncode == 2 and "pass one of them" in both.stderr

    replaced = cli("train", "--config", config, "--overwrite", "--set", "optim.max_steps=2", "--set", "run.log_every=1")
    assert replaced.returncode == 0, replaced.stderr
    assert "--overwrite: removed config.yaml, metrics.csv, last.ckpt" in replaced.stderr
    assert "best.safetensors" in replaced.stderr and "(kept: cache_train)" in replaced.stderr
    assert (out / "cache_train" / "manifest.json").read_text() == "{}"
    assert [int(r["step"]) for r in csv_rows(out)] == [1, 2]  # one run's history, not two mixed


def test_resume_names_config_changes_applies_lr_and_schedule_refuses_the_model(tmp_path, small_world, tiny_files):
    sam_path, _ = tiny_files
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", small_world, out, sam_path, optim={"max_steps": 4})
    assert cli("train", "--config", config).returncode == 0

    refused = cli("train", "--config", config, "--resume", "--set", "model.prompter.hidden_dim=32",
                  "--set", "optim.batch_size=2", "--set", "optim.lr=2e-3")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    line = refused.stderr.strip()
    assert line.count("\n") == 0 and "cannot apply" in line
    assert "model.prompter.hidden_dim: 64 -> 32" in line and "optim.batch_size: 4 -> 2" in line
    assert "optim.lr: 0.001 -> 0.002" in line  # the one that could apply is named too
    assert len(csv_rows(out)) == 4

    resumed = cli("train", "--config", config, "--resume", "--set", "optim.lr=2e-3", "--set", "optim.max_steps=7")
    assert resumed.returncode == 0, resumed.stderr
    assert "resume: optim.lr: 0.001 -> 0.002" in resumed.stderr
    assert "resume: optim.max_steps: 4 -> 7" in resumed.stderr
    rows = csv_rows(out)
    assert [int(r["step"]) for r in rows] == list(range(1, 8))
    for row in rows[4:]:  # the new lr really drives the re-planned schedule (warmup 2, cosine to step 7)
        assert float(row["train/lr"]) == pytest.approx(2e-3 * lr_factor(int(row["step"]), 2, 7, 0.01))
    for row in rows[:4]:
        assert float(row["train/lr"]) == pytest.approx(1e-3 * lr_factor(int(row["step"]), 2, 4, 0.01))
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["optim"]["lr"] == 2e-3 and stored["optim"]["max_steps"] == 7

    moved = cli("train", "--config", config, "--resume", "--set", "optim.lr=2e-3", "--set", "optim.max_steps=7",
                "--set", f"data.root={small_world}/../{small_world.name}")  # the same folder, spelled otherwise
    assert moved.returncode == 0 and "data.root" not in moved.stderr, moved.stderr


def test_early_stopping_best_metric_and_tensorboard(tmp_path, small_world, tiny_files):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sam_path, _ = tiny_files
    out = tmp_path / "run"
    # lr ~ 0: the prompter never changes, so after the first validation none is a new best
    config = write_config(tmp_path / "c.yaml", small_world, out, sam_path, data={"val_split": "val"},
                          optim={"max_steps": 20, "lr": 1e-12},
                          run={"val_every": 1, "early_stop_patience": 2, "best_metric": "paper_mIoU", "tb_images": 2})
    proc = cli("train", "--config", config)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["early_stopped"] and summary["steps"] == 3 and summary["best_step"] == 1
    assert summary["best_metric"] == "paper_mIoU"
    assert "early stopping: 2 validations without a new best val paper_mIoU" in proc.stderr
    assert "saved best (step 1, paper_mIoU " in proc.stderr
    info = best_info(out)
    assert info["step"] == 1 and info["best_metric"] == "paper_mIoU" and "val_paper_mIoU" in info
    resumed = cli("train", "--config", config, "--resume")  # still no patience left: nothing more to train
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["steps"] == 3, resumed.stderr

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"val_overlay/0", "val_overlay/1"} == set(tags["images"])
    assert [e.step for e in events.Images("val_overlay/0")] == [1, 2, 3]
    per_class = [t for t in tags["scalars"] if t.startswith("val_IoU/")]
    assert per_class and {"val/mIoU", "val/paper_mIoU", "train/loss_total", "train/lr"} <= set(tags["scalars"])
    image = events.Images("val_overlay/0")[0]
    assert image.width > 2 * 128 and image.height >= 128  # GT | prediction, side by side
