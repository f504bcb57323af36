"""The run folder (`run.out_dir`): what a run writes there, refusing to clobber one, and what `--resume` may change.

Layout (all written atomically, by global rank 0):
    config.yaml        the resolved config in effect (absolute paths), rewritten at every start
    metrics.csv        one row per logged step (train/*) and validation (val/*), appended and flushed
    tensorboard/       the same scalars, per-class val IoU, GT | prediction overlays of a few val images
    last.ckpt          full training state (weights_only-loadable): what --resume continues
    last.safetensors   deployable prompter of the last checkpoint step
    best.safetensors   deployable prompter of the best validation (run.best_metric)
    summary.json       written when a run ends
"""
from __future__ import annotations

import logging
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..errors import WpsSamError
from ..io_utils import atomic_write_text
from ..modeling.sam import RANDOM_WEIGHTS, refusal_reason

log = logging.getLogger(__name__)

CONFIG_FILE, METRICS_FILE, STATE_FILE, SUMMARY_FILE = "config.yaml", "metrics.csv", "last.ckpt", "summary.json"
LAST_PROMPTER, BEST_PROMPTER = "last.safetensors", "best.safetensors"
TENSORBOARD_DIR = "tensorboard"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, STATE_FILE, SUMMARY_FILE, LAST_PROMPTER, BEST_PROMPTER)
RUN_DIRS = (TENSORBOARD_DIR, "logs")  # logs/: the CSV folder of runs before metrics.csv moved up
PATH_KEYS = ("data.root", "data.cache_dir", "model.sam_checkpoint", "run.out_dir")

# What --resume may change, and how it applies (the rest is refused: it changes what is trained or the data order).
RESUMABLE = {
    "optim.lr": "new base lr; the schedule continues from this step with it",
    "optim.weight_decay": "applied to the optimizer from this step",
    "optim.grad_clip": "applied from this step",
    "optim.max_steps": "the warmup + cosine schedule is re-planned over the new total from this step",
    "optim.epochs": "the warmup + cosine schedule is re-planned over the new total from this step",
    "optim.warmup_steps": "the schedule is re-planned from this step",
    "optim.min_lr_ratio": "the schedule is re-planned from this step",
    "run.log_every": "applied", "run.val_every": "applied", "run.ckpt_every": "applied", "run.progress": "applied",
    "run.tb_images": "applied",
    "run.early_stop_patience": "applied (validations without a new best are counted on)",
    "run.accelerator": "applied", "run.precision": "applied (numerics differ from the stored run's)",
    "run.devices": "applied; data order from here differs from an uninterrupted run on the old count",
    "run.num_nodes": "applied; data order from here differs from an uninterrupted run on the old count",
    "data.num_workers": "applied",
    "data.cache_dir": "applied (the cache is checked against the SAM and images as at every start)",
    "data.val_max_images": "applied; the best so far was measured on the old number of images",
}
REFUSED_WHY = {
    "model": "the stored weights belong to the old model", "loss": "it changes the objective being trained",
    "data": "it changes the training or validation data", "optim": "it changes the optimizer state or the data order",
    "run": "it changes the data order or how best is chosen",
}


def resolved(cfg_dict: dict) -> dict:
    """The config with its path keys made absolute (so config.yaml and resume comparisons do not depend on the cwd)."""
    out = {section: dict(values) for section, values in cfg_dict.items()}
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = out[section][name]
        if value and value != RANDOM_WEIGHTS:
            out[section][name] = os.path.abspath(value)  # literal (no ~ expansion), normalised
    return out


def previous_run_files(out: Path) -> list[str]:
    if not out.is_dir():
        return []
    found = [name for name in RUN_FILES if (out / name).is_file() or (out / name).is_symlink()]
    found += [f"{name}/" for name in RUN_DIRS if (out / name).exists() or (out / name).is_symlink()]
    return found + sorted(p.name for p in out.glob(".*.tmp"))


def prepare_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder holding a previous run unless --resume or --overwrite; --overwrite removes exactly the
    files a run writes (listed in RUN_FILES/RUN_DIRS), never anything else (an embedding cache kept in the
    folder stays)."""
    if resume and overwrite:
        raise WpsSamError("--resume continues the run in the folder and --overwrite replaces it: pass one of them")
    if out.exists() and not out.is_dir():
        raise WpsSamError(f"run.out_dir {out} exists and is not a folder")
    found = previous_run_files(out)
    if resume:
        if not (out / STATE_FILE).is_file():
            raise WpsSamError(f"--resume: no training state at {out / STATE_FILE}")
        return
    if not found:
        out.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise WpsSamError(f"{out} holds a previous run ({', '.join(found)}): pass --resume to continue it, "
                          f"--overwrite to replace it, or another --out-dir")
    for name in found:
        path = out / name.rstrip("/")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    kept = sorted(p.name for p in out.iterdir())
    log.warning("--overwrite: removed %s from %s%s", ", ".join(found), out,
                f" (kept: {', '.join(kept)})" if kept else "")


def read_state(path: Path) -> dict:
    """last.ckpt, read with weights_only (no pickled code ever runs); errors are one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WpsSamError(f"--resume: refusing to load {path}: it holds pickled Python objects beyond "
                          f"tensors ({refusal_reason(exc)})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise WpsSamError(f"--resume: cannot use {path}: {str(exc).splitlines()[0]}") from None


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):  # an empty one (model.prompter: {}) holds only defaults
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass(frozen=True)
class ConfigChange:
    key: str
    old: object
    new: object

    @property
    def allowed(self) -> bool:
        return self.key in RESUMABLE

    def describe(self) -> str:
        why = RESUMABLE.get(self.key) or f"cannot apply: {REFUSED_WHY.get(self.key.split('.')[0], 'not resumable')}"
        old, new = ("<default>" if v is None else repr(v) for v in (self.old, self.new))
        return f"{self.key}: {old} -> {new} ({why})"


def config_changes(stored: dict, current: dict, same_sam: bool) -> list[ConfigChange]:
    """Every key whose value differs between the stored run's config and this one (paths compared resolved;
    run.out_dir is the folder itself; a moved SAM checkpoint with the same sha256 is the same SAM)."""
    old, new = flatten(resolved(stored)), flatten(resolved(current))
    changes = []
    for key in sorted(set(old) | set(new)):
        if key == "run.out_dir" or old.get(key) == new.get(key) or (key in PATH_KEYS and _same_path(old[key], new[key])):
            continue
        if key == "model.sam_checkpoint" and same_sam:
            log.info("resume: model.sam_checkpoint moved (%s -> %s), same sha256", old.get(key), new.get(key))
            continue
        changes.append(ConfigChange(key, old.get(key), new.get(key)))
    return changes


def _same_path(a: str, b: str) -> bool:
    return bool(a) and bool(b) and Path(a).resolve() == Path(b).resolve()  # through symlinks


def check_resume(changes: list[ConfigChange]) -> None:
    """Refuse (one line naming every difference) if any cannot apply; else log one line per applied change."""
    refused = [c for c in changes if not c.allowed]
    if refused:
        applied = [c for c in changes if c.allowed]
        also = f"; these could apply: {'; '.join(c.describe() for c in applied)}" if applied else ""
        raise WpsSamError(f"--resume with a changed config: {'; '.join(c.describe() for c in refused)}{also}. "
                          f"Resume with the stored values, or start a new run (--overwrite or another --out-dir)")
    for change in changes:
        log.info("resume: %s", change.describe())


def write_config(out: Path, cfg_dict: dict) -> str:
    text = yaml.safe_dump(resolved(cfg_dict), sort_keys=False, default_flow_style=False)
    atomic_write_text(out / CONFIG_FILE, text)
    return text
