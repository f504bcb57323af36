"""Training configs: shipped YAMLs validate, overrides coerce, schedule and sharding are pure functions."""
from __future__ import annotations

from pathlib import Path

import pytest

from wps_sam_core.distill.config import config_from_dict, load_train_config
from wps_sam_core.distill.dataset import epoch_batches
from wps_sam_core.distill.run_folder import check_resume, config_changes
from wps_sam_core.distill.runlog import MetricsCSV
from wps_sam_core.distill.trainer import lr_factor
from wps_sam_core.errors import WpsSamError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "training" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_train_config(path, ["data.root=/data/x"]).validate()
    assert cfg.optim.lr > 0 and cfg.model.sam_type


def test_reference_defaults():
    cfg = load_train_config(None, ["data.root=/x"])
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (1e-4, 1e-4)
    assert (cfg.loss.ce_weight, cfg.loss.token_weight, cfg.loss.cost_class, cfg.loss.cost_token) == (5, 20, 10, 1)


@pytest.mark.parametrize("override,message", [
    ("optim.batch_size=2.5", "expected an integer"),
    ("optim.nope=1", "unknown keys"),
    ("data.hflip=maybe", "expected true/false"),
    ("lr=1", "section.key=value"),
])
def test_bad_overrides(override, message):
    with pytest.raises(WpsSamError, match=message):
        load_train_config(None, ["data.root=/x", override])


def test_lr_warmup_then_cosine():
    assert lr_factor(0, 10, 100, 0.01) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.01) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, 0.01) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, 0.01) == pytest.approx(0.01)
    assert lr_factor(55, 10, 100, 0.01) == pytest.approx(0.505)


def test_epoch_batches_are_deterministic_disjoint_and_equal_per_rank():
    a = epoch_batches(10, 2, epoch=3, seed=1, rank=0, world_size=2, hflip=True)
    b = epoch_batches(10, 2, epoch=3, seed=1, rank=1, world_size=2, hflip=True)
    assert a == epoch_batches(10, 2, epoch=3, seed=1, rank=0, world_size=2, hflip=True)
    assert len(a) == len(b) == 2
    seen = [i for batch in a + b for i, _ in batch]
    assert len(seen) == len(set(seen)) == 8
    assert epoch_batches(10, 2, epoch=4, seed=1, rank=0, world_size=2, hflip=True) != a
    assert {v for batch in a + b for _, v in batch} <= {"orig", "hflip"}


def test_coordinate_head_needs_matching_supervision():
    cfg = load_train_config(None, ["data.root=/x", "data.supervision=box", "model.prompter.prompt_head=box"]).validate()
    assert cfg.model.prompter["prompt_head"] == "box"
    load_train_config(None, ["data.root=/x", "data.supervision=point_interior", "model.prompter.prompt_head=point"]).validate()
    with pytest.raises(WpsSamError, match="prompt_head 'box' .* needs box supervision"):
        load_train_config(None, ["data.root=/x", "data.supervision=point_center", "model.prompter.prompt_head=box"]).validate()
    with pytest.raises(WpsSamError, match="prompt_head 'point' .* mixed"):
        load_train_config(None, ["data.root=/x", "data.supervision=mixed", "model.prompter.prompt_head=point"]).validate()


@pytest.mark.parametrize("override,message", [
    ("run.best_metric=loss", "run.best_metric must be one of"),
    ("run.early_stop_patience=-1", "run.early_stop_patience must be >= 0"),
    ("run.val_every=0", "run.val_every must be > 0"),
])
def test_bad_run_settings(override, message):
    with pytest.raises(WpsSamError, match=message):
        load_train_config(None, ["data.root=/x", override]).validate()


def test_yaml_syntax_errors_name_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  root: /x\n  hflip: [true\n")
    with pytest.raises(WpsSamError, match=r"bad.yaml: invalid YAML at line 4, column 1: expected ',' or ']'"):
        load_train_config(bad)
    with pytest.raises(WpsSamError, match=r"override 'optim.lr=\{1': invalid YAML at line 1, column 3"):
        load_train_config(None, ["optim.lr={1"])


def test_resume_config_changes_are_classified(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stored = load_train_config(None, ["data.root=world", "model.sam_checkpoint=sam.pth"]).to_dict()
    del stored["run"]["best_metric"]  # a run stored before the key existed: its default, not a change
    same = load_train_config(None, [f"data.root={tmp_path / 'world'}", "model.sam_checkpoint=sam.pth"]).to_dict()
    stored = config_from_dict(stored).to_dict()
    assert config_changes(stored, same, same_sam=False) == []
    changed = load_train_config(None, ["data.root=world", "model.sam_checkpoint=/moved/sam.pth", "optim.lr=3e-4",
                                       "model.prompter.hidden_dim=32", "run.val_every=10"]).to_dict()
    names = {c.key: c.allowed for c in config_changes(stored, changed, same_sam=False)}
    assert names == {"model.sam_checkpoint": False, "optim.lr": True, "model.prompter.hidden_dim": False,
                     "run.val_every": True}
    assert "model.sam_checkpoint" not in {c.key for c in config_changes(stored, changed, same_sam=True)}
    with pytest.raises(WpsSamError, match=r"model.prompter.hidden_dim: <default> -> 32 \(cannot apply.*optim.lr"):
        check_resume(config_changes(stored, changed, same_sam=True))


def test_metrics_csv_appends_and_a_resume_drops_rows_after_its_step(tmp_path):
    path = tmp_path / "metrics.csv"
    first = MetricsCSV(path, keep_until=None)
    for step in (1, 2, 3):
        first.append(step, {"train/loss_total": float(step)})
    first.append(3, {"val/mIoU": 0.5})  # a new column: rewritten with the wider header
    with open(path, "a") as handle:
        handle.write("4,0.1")  # a row cut by SIGKILL
    resumed = MetricsCSV(path, keep_until=2)
    resumed.append(3, {"train/loss_total": 30.0, "val/mIoU": 0.25})
    lines = path.read_text().splitlines()
    assert lines == ["step,train/loss_total,val/mIoU", "1,1.0,", "2,2.0,", "3,30.0,0.25"]
    MetricsCSV(path, keep_until=None)  # a new run starts a new file
    assert path.read_text() == ""


def test_process_flags_of_train_reach_the_config():
    """--devices/--num-nodes/--accelerator on `wps-sam train` (as on `wps-sam cache`) set run.*; a flag wins over --set."""
    from wps_sam_core.cli.main import build_parser
    from wps_sam_core.cli.train import train_overrides

    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "partimagenet_vit_b.yaml"
    args = build_parser().parse_args(["train", "--config", str(config), "--set", "run.num_nodes=5",
                                      "--devices", "4", "--num-nodes", "2", "--accelerator", "cpu"])
    cfg = load_train_config(args.config, train_overrides(args))
    assert (cfg.run.devices, cfg.run.num_nodes, cfg.run.accelerator) == (4, 2, "cpu")
