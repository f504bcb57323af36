"""The distillation training loop on Lightning Fabric (1 CPU, N GPUs or several nodes: same code).

Exact resume: data order and flips are a function of (seed, epoch) and the dropout RNG is reseeded
from (seed, step, rank), so `--resume` from `last.ckpt` continues the very same trajectory.
"""
from __future__ import annotations

import json
import logging
import math
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import PrompterCheckpoint, save_prompter_checkpoint
from ..data.coco import CocoPartDataset
from ..errors import WpsSamError
from ..io_utils import atomic_path, atomic_write_text, sha256_file
from ..modeling.prompter import Prompter, PrompterConfig
from ..modeling.sam import get_sam_config, load_sam, refusal_reason
from ..modeling.wpssam import WPSSAM
from .cache import EmbeddingCache, provenance_for
from .config import TrainConfig
from .dataset import DistillDataset, collate, epoch_batches
from .losses import WPSCriterion

log = logging.getLogger(__name__)

STATE_FILE = "last.ckpt"  # full training state (weights_only-loadable)
LAST_PROMPTER, BEST_PROMPTER = "last.safetensors", "best.safetensors"  # deployable prompter checkpoints


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup, then cosine decay to `min_ratio`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def teacher_targets(model: WPSSAM, batch: dict, device: torch.device) -> list[dict[str, torch.Tensor | None]]:
    """SAM's prompt encoder on the weak labels, in two batched calls (all boxes, all points).

    Per image: "labels" and "tokens" of its boxes, then of its points; "coords" (normalised to [0, 1],
    for the box/point heads) when the image's labels are all of one kind, else None.
    """
    boxes = torch.cat(batch["boxes"]).to(device)
    points = torch.cat(batch["points"]).to(device)
    box_tokens = model.teacher_box_tokens(boxes) if len(boxes) else None
    point_tokens = model.teacher_point_tokens(points) if len(points) else None
    dim = model.sam.prompt_encoder.embed_dim
    targets = []
    b0 = p0 = 0
    for box_classes, point_classes in zip(batch["box_classes"], batch["point_classes"]):
        b1, p1 = b0 + len(box_classes), p0 + len(point_classes)
        labels = [classes for classes in (box_classes, point_classes) if len(classes)]
        tokens = []
        if b1 > b0:
            tokens.append(box_tokens[b0:b1])
        if p1 > p0:
            tokens.append(point_tokens[p0:p1])
        coords = None
        if b1 > b0 and p1 == p0:
            coords = boxes[b0:b1] / model.image_size
        elif p1 > p0 and b1 == b0:
            coords = points[p0:p1] / model.image_size
        targets.append({
            "labels": torch.cat(labels).to(device) if labels else torch.zeros(0, dtype=torch.long, device=device),
            "tokens": torch.cat(tokens) if tokens else torch.zeros(0, 2, dim, device=device),
            "coords": coords,
        })
        b0, p0 = b1, p1
    return targets


@dataclass
class TrainingRun:
    """What the loop needs beyond the trainer's modules; made once by Trainer._setup."""

    train_data: DistillDataset
    val_set: CocoPartDataset | None
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    total_steps: int
    start_step: int  # > 0 when resumed
    best: float  # best validation mIoU so far (-inf: none yet)
    on_the_fly: bool  # no embedding cache: the frozen encoder runs at every step


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        self.cfg = cfg.validate()
        self.resume = resume
        self.out = Path(cfg.run.out_dir)

    # ---- setup ---------------------------------------------------------------------------
    def _fabric(self):
        import lightning as L
        from lightning.fabric.loggers import CSVLogger, TensorBoardLogger

        run = self.cfg.run
        multi = run.devices * run.num_nodes > 1
        loggers = [CSVLogger(str(self.out), name="logs", version="")]
        try:
            loggers.append(TensorBoardLogger(str(self.out), name="tensorboard", version=""))
        except ModuleNotFoundError:
            log.warning("tensorboard not installed: CSV logs only")
        return L.Fabric(accelerator=run.accelerator, devices=run.devices, num_nodes=run.num_nodes,
                        strategy="ddp" if multi else "auto", precision=run.precision, loggers=loggers)

    def _data(self, split: str) -> CocoPartDataset:
        return CocoPartDataset.from_root(self.cfg.data.root, split, skip_bad=self.cfg.data.skip_bad)

    def run(self) -> dict:
        self.fabric = self._fabric()
        self.fabric.launch()
        return self._loop(self._setup())

    def _setup(self) -> TrainingRun:
        """Data, frozen SAM + prompter, optimizer, scheduler, criterion (and the resumed state): sets the
        trainer's modules (`model`, `prompter`, `optimizer`, `criterion`, `meta`) and returns the rest."""
        cfg, fabric = self.cfg, self.fabric
        fabric.seed_everything(cfg.run.seed)  # same initial prompter on every rank
        if fabric.is_global_zero and self.out.is_dir():
            for stale in self.out.glob(".*.tmp"):  # half-written checkpoint of a killed run: never used
                stale.unlink()
        train_set = self._data(cfg.data.train_split)
        sam_type = cfg.model.sam_type
        sam_sha = sha256_file(cfg.model.sam_checkpoint) if cfg.model.sam_checkpoint else ""
        sam = load_sam(sam_type, cfg.model.sam_checkpoint or None).to(fabric.device)
        sam_cfg = get_sam_config(sam_type)
        prompter_cfg = PrompterConfig.from_dict({
            **cfg.model.prompter, "num_classes": train_set.num_classes, "prompt_dim": sam_cfg.prompt_embed_dim})
        prompter = Prompter(prompter_cfg, sam_cfg.embedding_size)
        self.model = WPSSAM(sam, prompter)
        cache = None
        if cfg.data.cache_dir:
            cache = EmbeddingCache(cfg.data.cache_dir)
            cache.check(provenance_for(sam, sam_type, sam_sha),
                        [train_set.instances(i).file_name for i in range(len(train_set))])
        else:
            log.info("no embedding cache: the frozen encoder runs at every step (see `wps-sam cache`)")
        train_data = DistillDataset.create(train_set, cfg.data.supervision, cfg.run.seed, sam_cfg.image_size, cache)

        opt_cls = torch.optim.AdamW if cfg.optim.optimizer == "adamw" else torch.optim.Adam
        optimizer = opt_cls(prompter.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        steps_per_epoch = len(epoch_batches(len(train_data), cfg.optim.batch_size, 0, cfg.run.seed,
                                            fabric.global_rank, fabric.world_size, cfg.data.hflip))
        total = cfg.optim.max_steps if cfg.optim.max_steps > 0 else cfg.optim.epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg.optim.warmup_steps, total, cfg.optim.min_lr_ratio))
        step, best = 0, -math.inf
        if self.resume:
            step, best = self._load_state(prompter, optimizer, scheduler)
        self.prompter, self.optimizer = fabric.setup(prompter, optimizer)
        self.criterion = WPSCriterion(train_set.num_classes, cfg.loss).to(fabric.device)
        self.meta = dict(config=prompter_cfg, class_names=train_set.class_names, sam_type=sam_type,
                         image_size=sam_cfg.image_size, sam_checkpoint_sha256=sam_sha)
        val_set = self._data(cfg.data.val_split) if cfg.data.val_split else None
        return TrainingRun(train_data, val_set, scheduler, steps_per_epoch, total, step, best, cache is None)

    @property
    def unwrapped(self) -> Prompter:
        """The prompter itself, without Fabric's wrapper (and DDP's): what is saved and validated."""
        return self.prompter.module if hasattr(self.prompter, "module") else self.prompter

    # ---- loop ----------------------------------------------------------------------------
    def _loop(self, run: TrainingRun) -> dict:
        from tqdm import tqdm

        cfg, fabric = self.cfg, self.fabric
        step, best, total, scheduler = run.start_step, run.best, run.total_steps, run.scheduler
        bar = tqdm(total=total, initial=step, disable=not (cfg.run.progress and fabric.is_global_zero),
                   desc="training", unit="step")
        last_losses: dict[str, float] = {}
        started = time.perf_counter()
        while step < total:
            epoch, offset = divmod(step, run.steps_per_epoch)
            batches = epoch_batches(len(run.train_data), cfg.optim.batch_size, epoch, cfg.run.seed,
                                    fabric.global_rank, fabric.world_size, cfg.data.hflip)[offset:]
            loader = torch.utils.data.DataLoader(run.train_data, batch_sampler=batches, collate_fn=collate,
                                                 num_workers=cfg.data.num_workers)
            for batch in loader:
                torch.manual_seed(cfg.run.seed * 7919 + step * fabric.world_size + fabric.global_rank)
                losses = self._step(batch, run.on_the_fly)
                scheduler.step()
                step += 1
                bar.update(1)
                last_losses = {k: float(v) for k, v in losses.items()}
                if step % cfg.run.log_every == 0 or step == total:
                    fabric.log_dict({**{f"train/{k}": v for k, v in last_losses.items()},
                                     "train/lr": scheduler.get_last_lr()[0], "epoch": epoch}, step=step)
                    bar.set_postfix(loss=f"{last_losses['loss']:.4f}")
                if run.val_set is not None and (step % cfg.run.val_every == 0 or step == total):
                    score = self._validate(run.val_set, step)
                    if score > best:
                        best = score
                        self._save_prompter(BEST_PROMPTER, step, {"val_mIoU": score})
                if step % cfg.run.ckpt_every == 0 or step == total:
                    self._save_state(scheduler, step, best)
                if step >= total:
                    break
        bar.close()
        for logger in fabric.loggers:
            logger.finalize("success")
        summary = {"steps": step, "final_loss": last_losses.get("loss"), "best_val_mIoU": None if best == -math.inf else best,
                   "seconds": round(time.perf_counter() - started, 2), "out_dir": str(self.out)}
        if fabric.is_global_zero:
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2))
        return summary

    def _step(self, batch: dict, on_the_fly: bool) -> dict[str, torch.Tensor]:
        fabric = self.fabric
        inputs = batch["inputs"].to(fabric.device)
        embeddings = self.model.encode(inputs) if on_the_fly else inputs
        targets = teacher_targets(self.model, batch, fabric.device)
        count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=fabric.device)
        num_targets = float(fabric.all_reduce(count, reduce_op="mean")) if fabric.world_size > 1 else float(count)
        outs = self.prompter(embeddings, all_layers=self.cfg.loss.aux_loss)
        losses: dict[str, torch.Tensor] = {}
        for out in outs if isinstance(outs, list) else [outs]:
            out = self.model.with_tokens(out)
            layer_losses = self.criterion(out.logits, out.tokens, targets, num_targets=max(num_targets, 1.0),
                                          coords=out.coords)
            total = losses.get("loss", 0) + layer_losses["loss"]
            losses = {**layer_losses, "loss": total}  # components logged for the last layer; loss sums all
        fabric.backward(losses["loss"])
        if self.cfg.optim.grad_clip > 0:
            fabric.clip_gradients(self.prompter, self.optimizer, max_norm=self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {k: v.detach() for k, v in losses.items()}

    # ---- validation ----------------------------------------------------------------------
    @torch.no_grad()
    def _validate(self, val_set: CocoPartDataset, step: int) -> float:
        """Dataset-level part mIoU of the current prompter on up to val_max_images (sharded over ranks)."""
        from ..evaluation.metrics import SegmentationMetrics
        from ..segmenter import PartSegmenter

        fabric = self.fabric
        module = self.unwrapped
        segmenter = PartSegmenter(WPSSAM(self.model.sam, module), val_set.class_names, device=str(fabric.device))
        metrics = SegmentationMetrics(val_set.num_classes, val_set.class_names)
        indices = list(range(min(len(val_set), self.cfg.data.val_max_images)))[fabric.global_rank::fabric.world_size]
        for start in range(0, len(indices), 4):
            samples = [val_set[i] for i in indices[start:start + 4]]
            for sample, result in zip(samples, segmenter.segment_batch([s.image for s in samples])):
                metrics.update(result.labels, sample.semantic_labels())
        module.train()
        state = torch.as_tensor(metrics.state_vector(), device=fabric.device)
        if fabric.world_size > 1:
            state = fabric.all_reduce(state, reduce_op="sum")
        merged = SegmentationMetrics.from_state_vector(state.cpu().numpy(), val_set.num_classes, val_set.class_names)
        result = merged.compute()
        score = result["mIoU"] if result["mIoU"] == result["mIoU"] else 0.0  # NaN (no GT parts) -> 0
        fabric.log_dict({"val/mIoU": score, "val/paper_mIoU": result["paper_mIoU"] or 0.0}, step=step)
        return float(score)

    # ---- checkpoints ---------------------------------------------------------------------
    def _save_prompter(self, name: str, step: int, info: dict) -> None:
        if not self.fabric.is_global_zero:
            return
        ckpt = PrompterCheckpoint(state_dict=self.unwrapped.state_dict(),
                                  info={"step": step, **info, "train_config": self.cfg.to_dict()}, **self.meta)
        save_prompter_checkpoint(self.out / name, ckpt)

    def _save_state(self, scheduler, step: int, best: float) -> None:
        if self.fabric.is_global_zero:
            state = {"prompter": self.unwrapped.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "step": step, "best": best,
                     "config": json.dumps(self.cfg.to_dict())}
            with atomic_path(self.out / STATE_FILE) as tmp:
                torch.save(state, tmp)
            self._save_prompter(LAST_PROMPTER, step, {})
        self.fabric.barrier()

    def _load_state(self, prompter, optimizer, scheduler) -> tuple[int, float]:
        path = self.out / STATE_FILE
        if not path.is_file():
            raise WpsSamError(f"--resume: no training state at {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            prompter.load_state_dict(state["prompter"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except pickle.UnpicklingError as exc:  # weights_only refused it: never unpickle code
            raise WpsSamError(f"--resume: refusing to load {path}: it holds pickled Python objects beyond "
                              f"tensors ({refusal_reason(exc)})") from None
        except (RuntimeError, KeyError, EOFError, ValueError) as exc:
            raise WpsSamError(f"--resume: cannot use {path}: {str(exc).splitlines()[0]}") from None
        log.info("resuming from %s at step %d", path, state["step"])
        return int(state["step"]), float(state["best"])


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    return Trainer(cfg, resume).run()
