"""Training configuration: one YAML schema (documented here), dotted `--set key=value` overrides.

Example (training/configs/partimagenet_vit_b.yaml)::

    data:  {root: /data/PartImageNet, train_split: train, val_split: val, supervision: box,
            cache_dir: /data/cache/pin_vit_b, hflip: true}
    model: {sam_type: vit_b, sam_checkpoint: /models/sam_vit_b_01ec64.pth, prompter: {num_queries: 25}}
    optim: {lr: 1.0e-4, weight_decay: 1.0e-4, batch_size: 8, epochs: 150, warmup_steps: 500, grad_clip: 0.1}
    run:   {out_dir: runs/pin_vit_b, devices: 4, precision: bf16-mixed, seed: 42}
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import WpsSamError
from ..io_utils import parse_yaml
from .losses import LossConfig

SUPERVISIONS = ("box", "point_center", "point_interior", "mixed")
BEST_METRICS = ("mIoU", "mAcc", "paper_mIoU", "paper_mAcc", "mIoU_with_background", "pixel_acc")  # higher = better


@dataclass(frozen=True)
class DataConfig:
    root: str = ""  # PartImageNet layout: ROOT/images/<split>/, ROOT/annotations/<split>/<split>.json
    train_split: str = "train"
    val_split: str = ""  # "" = no validation
    supervision: str = "box"  # box | point_center | point_interior | mixed (per-instance random)
    cache_dir: str = ""  # embedding cache from `wps-sam cache`; "" = run the encoder on the fly
    hflip: bool = False  # random horizontal flips (the cache must hold "hflip" variants)
    skip_bad: bool = False  # skip and count bad annotations/images instead of stopping
    num_workers: int = 0
    val_max_images: int = 200  # images decoded for validation mIoU


@dataclass(frozen=True)
class ModelConfig:
    sam_type: str = "vit_b"
    sam_checkpoint: str = ""  # required: an official SAM checkpoint, or "random" (random weights: tests only)
    prompter: dict = field(default_factory=dict)  # PrompterConfig overrides; num_classes/prompt_dim come from data/SAM


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adamw"  # adamw | adam
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 8  # per device
    epochs: int = 150
    max_steps: int = 0  # > 0 caps the run (overrides epochs)
    warmup_steps: int = 500
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 0.1  # max grad norm; 0 = off


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = "runs/wps_sam"
    seed: int = 42
    accelerator: str = "auto"  # auto | cpu | cuda
    devices: int = 1
    num_nodes: int = 1
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed (GPU)
    log_every: int = 20  # steps between metrics.csv/TensorBoard rows (and progress lines without a TTY)
    val_every: int = 1000  # steps
    ckpt_every: int = 500  # steps
    progress: bool = True  # a progress bar on a TTY; elsewhere (files, cluster logs) a line every log_every
    best_metric: str = "mIoU"  # validation metric that picks best.safetensors and drives early stopping
    early_stop_patience: int = 0  # stop after this many validations without a new best; 0 = never
    tb_images: int = 4  # the first N val images: GT | prediction overlays in TensorBoard at each validation


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "TrainConfig":
        if self.data.supervision not in SUPERVISIONS:
            raise WpsSamError(f"data.supervision must be one of {SUPERVISIONS}, got {self.data.supervision!r}")
        if not self.data.root:
            raise WpsSamError("data.root is required (the dataset folder)")
        if self.optim.optimizer not in ("adamw", "adam"):
            raise WpsSamError(f"optim.optimizer must be adamw or adam, got {self.optim.optimizer!r}")
        for name, value in (("optim.lr", self.optim.lr), ("optim.batch_size", self.optim.batch_size),
                            ("run.devices", self.run.devices), ("run.num_nodes", self.run.num_nodes)):
            if not value > 0:
                raise WpsSamError(f"{name} must be > 0, got {value}")
        for name, value in (("run.log_every", self.run.log_every), ("run.val_every", self.run.val_every),
                            ("run.ckpt_every", self.run.ckpt_every)):
            if not value > 0:
                raise WpsSamError(f"{name} must be > 0 (steps), got {value}")
        if self.run.best_metric not in BEST_METRICS:
            raise WpsSamError(f"run.best_metric must be one of {BEST_METRICS}, got {self.run.best_metric!r}")
        for name, value in (("run.early_stop_patience", self.run.early_stop_patience),
                            ("run.tb_images", self.run.tb_images)):
            if value < 0:
                raise WpsSamError(f"{name} must be >= 0, got {value}")
        if self.optim.epochs <= 0 and self.optim.max_steps <= 0:
            raise WpsSamError("set optim.epochs or optim.max_steps > 0")
        head = self.model.prompter.get("prompt_head", "tokens")
        kind = self.data.supervision.split("_")[0]  # box | point (point_center, point_interior) | mixed
        if head != "tokens" and head != kind:
            raise WpsSamError(f"model.prompter.prompt_head {head!r} regresses {head} coordinates, so it needs "
                              f"{head} supervision (got data.supervision: {self.data.supervision!r}); "
                              f"use prompt_head: tokens for mixed labels")
        return self


def _from_dict(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise WpsSamError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise WpsSamError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    values = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        values[name] = _from_dict(type(default), value, f"{where}.{name}") if is_dataclass(default) else _coerce(value, default, f"{where}.{name}")
    return cls(**values)


def _coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise WpsSamError(f"{where}: expected true/false, got {value!r}")
    if isinstance(default, (int, float)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise WpsSamError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(default, float):
            return number
        if not number.is_integer():
            raise WpsSamError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    if isinstance(default, str):
        return "" if value is None else str(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise WpsSamError(f"{where}: expected a mapping, got {value!r}")
        return value
    return value


def load_train_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """YAML file (optional) + `section.key=value` overrides -> validated TrainConfig."""
    data: dict = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise WpsSamError(f"config file not found: {path}")
        data = parse_yaml(path.read_text(), str(path)) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise WpsSamError(f"override {item!r} must look like section.key=value")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise WpsSamError(f"override {item!r}: {part} is not a section")
        node[leaf] = parse_yaml(raw, f"override {item!r}")
    return _from_dict(TrainConfig, data, "config")


def config_from_dict(data: dict, where: str = "config") -> TrainConfig:
    """A TrainConfig from a to_dict() mapping (e.g. the one stored in last.ckpt); missing keys take defaults."""
    return _from_dict(TrainConfig, data, where)


def with_overrides(cfg: TrainConfig, **sections: dict) -> TrainConfig:
    """Programmatic overrides, e.g. with_overrides(cfg, optim={"max_steps": 10})."""
    return replace(cfg, **{k: replace(getattr(cfg, k), **v) for k, v in sections.items()})
