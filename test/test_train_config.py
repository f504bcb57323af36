"""Training configs: shipped YAMLs validate, overrides coerce, schedule and sharding are pure functions."""
from __future__ import annotations

from pathlib import Path

import pytest

from wps_sam_core.distill.config import load_train_config
from wps_sam_core.distill.dataset import epoch_batches
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
