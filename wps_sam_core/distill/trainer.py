"""The distillation training loop on Lightning Fabric (1 CPU, N GPUs or several nodes: same code).

Exact resume: data order and flips are a function of (seed, epoch) and the dropout RNG is reseeded
from (seed, step, rank), so `--resume` from `last.ckpt` continues the very same trajectory. What the run
folder holds and what a resume may change: run_folder.py; what is logged where: runlog.py.

Losses (logged every run.log_every steps, mean over ranks): `train/loss_total` is what is optimised, the
sum over the decoder layers (DETR's auxiliary losses, loss.aux_loss) of each layer's weighted loss;
`train/loss_last` is the last layer's weighted loss and `train/loss_ce`, `loss_token` (and `loss_coord`,
`loss_giou` for a box/point head) its unweighted components. Without aux_loss, loss_total == loss_last.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import PrompterCheckpoint, save_prompter_checkpoint
from ..data.coco import CocoPartDataset
from ..errors import WpsSamError
from ..io_utils import atomic_path, atomic_write_text, sha256_file
from ..modeling.prompter import Prompter, PrompterConfig
from ..modeling.sam import get_sam_config, load_sam, sam_weights_path
from ..modeling.wpssam import WPSSAM
from .cache import EmbeddingCache, provenance_for
from .config import TrainConfig, config_from_dict
from .dataset import DistillDataset, collate, epoch_batches
from .losses import WPSCriterion
from .processes import Ranks, launch, make_fabric
from .run_folder import (BEST_PROMPTER, CONFIG_FILE, LAST_PROMPTER, STATE_FILE, SUMMARY_FILE, check_resume,
                         config_changes, prepare_out_dir, read_state, write_config)
from .runlog import RunLog
from .validation import overlays, validate

log = logging.getLogger(__name__)

__all__ = ["STATE_FILE", "LAST_PROMPTER", "BEST_PROMPTER", "Trainer", "train", "lr_factor", "teacher_targets"]
VAL_KEYS = ("mIoU", "mAcc", "paper_mIoU", "paper_mAcc")  # val/* in metrics.csv and TensorBoard (fractions)


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
    on_the_fly: bool  # no embedding cache: the frozen encoder runs at every step
    best: float = -math.inf  # best validation run.best_metric so far (-inf: none yet)
    best_step: int = -1
    since_best: int = 0  # validations since the best one (early stopping)


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> None:
        """Checks what needs no process group (config, the SAM checkpoint exists); the rest happens in run()."""
        self.cfg = cfg.validate()
        self.resume, self.overwrite = resume, overwrite
        self.out = Path(cfg.run.out_dir)
        self.sam_path = sam_weights_path(cfg.model.sam_checkpoint, "model.sam_checkpoint")
        if self.sam_path is not None and not self.sam_path.is_file():
            raise WpsSamError(f"model.sam_checkpoint: checkpoint not found: {self.sam_path}")
        self.sam_sha = sha256_file(self.sam_path) if self.sam_path is not None else ""

    # ---- setup ---------------------------------------------------------------------------
    def _fabric(self):
        run = self.cfg.run
        return make_fabric(run.accelerator, run.devices, run.num_nodes, run.precision)

    def _data(self, split: str) -> CocoPartDataset:
        return CocoPartDataset.from_root(self.cfg.data.root, split, skip_bad=self.cfg.data.skip_bad)

    def run(self) -> dict:
        self.fabric = self._fabric()
        launch(self.fabric)  # all ranks do the same work; one copy of every log line: rank 0's
        self._prepare_folder()
        return self._loop(self._setup())

    def _prepare_folder(self) -> None:
        """Rank 0: refuse/clear the run folder, check a resume's config changes, save config.yaml; every rank
        stops on a refusal (rank 0 says why, once)."""
        Ranks(self.fabric).on_zero(self._prepare_folder_on_zero)

    def _prepare_folder_on_zero(self) -> None:
        prepare_out_dir(self.out, self.resume, self.overwrite)
        for stale in self.out.glob(".*.tmp"):  # half-written file of a killed run: never used
            stale.unlink()
        if self.resume:
            state = read_state(self.out / STATE_FILE)
            try:
                stored = config_from_dict(json.loads(state["config"]), f"{self.out / STATE_FILE}: config")
            except (KeyError, TypeError, ValueError):
                raise WpsSamError(f"--resume: {self.out / STATE_FILE} holds no readable config") from None
            same_sam = bool(self.sam_sha) and state.get("sam_sha256") == self.sam_sha
            check_resume(config_changes(stored.to_dict(), self.cfg.to_dict(), same_sam))
        text = write_config(self.out, self.cfg.to_dict())
        log.info("config (saved as %s):\n%s", self.out / CONFIG_FILE, text.rstrip())

    def _setup(self) -> TrainingRun:
        """Data, frozen SAM + prompter, optimizer, scheduler, criterion (and the resumed state): sets the
        trainer's modules (`model`, `prompter`, `optimizer`, `criterion`, `meta`) and returns the rest."""
        cfg, fabric = self.cfg, self.fabric
        fabric.seed_everything(cfg.run.seed, verbose=False)  # same initial prompter on every rank
        log.info("seed %d, %d process(es) on %s", cfg.run.seed, fabric.world_size, fabric.device)
        train_set = self._data(cfg.data.train_split)
        sam_type = cfg.model.sam_type
        if self.sam_path is None:
            log.warning("model.sam_checkpoint: random: SAM %s has RANDOM weights (tests and smoke runs only)", sam_type)
        sam = load_sam(sam_type, self.sam_path).to(fabric.device)
        sam_cfg = get_sam_config(sam_type)
        prompter_cfg = PrompterConfig.from_dict({
            **cfg.model.prompter, "num_classes": train_set.num_classes, "prompt_dim": sam_cfg.prompt_embed_dim})
        prompter = Prompter(prompter_cfg, sam_cfg.embedding_size)
        self.model = WPSSAM(sam, prompter)
        cache = None
        if cfg.data.cache_dir:
            cache = EmbeddingCache(cfg.data.cache_dir)
            cache.check(provenance_for(sam, sam_type, self.sam_sha),  # names and (where recorded) image contents
                        {train_set.instances(i).file_name: train_set.image_path(i) for i in range(len(train_set))})
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
        val_set = self._data(cfg.data.val_split) if cfg.data.val_split else None
        run = TrainingRun(train_data, val_set, scheduler, steps_per_epoch, total, 0, cache is None)
        if self.resume:
            self._load_state(prompter, optimizer, scheduler, run)
        self._apply_optim_config(optimizer, scheduler, run)
        self.prompter, self.optimizer = fabric.setup(prompter, optimizer)
        self.criterion = WPSCriterion(train_set.num_classes, cfg.loss).to(fabric.device)
        self.meta = dict(config=prompter_cfg, class_names=train_set.class_names, sam_type=sam_type,
                         object_classes=list(train_set.category_map.object_classes),
                         image_size=sam_cfg.image_size, sam_checkpoint_sha256=self.sam_sha)
        return run

    def _apply_optim_config(self, optimizer, scheduler, run: TrainingRun) -> None:
        """The config's lr and weight decay over the (resumed) optimizer: a resumed optimizer/scheduler state
        carries the old ones. The lr of this step is the schedule's (warmup + cosine over the current total),
        the very value an uninterrupted run has, so an unchanged resume stays bit-exact."""
        lr = self.cfg.optim.lr
        current = lr * lr_factor(run.start_step, self.cfg.optim.warmup_steps, run.total_steps, self.cfg.optim.min_lr_ratio)
        for group in optimizer.param_groups:
            group.update(initial_lr=lr, lr=current, weight_decay=self.cfg.optim.weight_decay)
        scheduler.base_lrs = [lr] * len(optimizer.param_groups)
        scheduler._last_lr = [current] * len(optimizer.param_groups)

    @property
    def unwrapped(self) -> Prompter:
        """The prompter itself, without Fabric's wrapper (and DDP's): what is saved and validated."""
        return self.prompter.module if hasattr(self.prompter, "module") else self.prompter

    # ---- loop ----------------------------------------------------------------------------
    def _loop(self, run: TrainingRun) -> dict:
        cfg, fabric = self.cfg, self.fabric
        step, total, scheduler = run.start_step, run.total_steps, run.scheduler
        self.runlog = runlog = RunLog(self.out, fabric.is_global_zero, step, total, self.resume, cfg.run.progress,
                                      cfg.run.log_every)
        stop = self._early_stop(run)
        if step >= total:
            log.info("the run is at step %d of %d: nothing to train", step, total)
        losses: dict[str, torch.Tensor] = {}
        started = time.perf_counter()
        while step < total and stop is None:
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
                if step % cfg.run.log_every == 0 or step == total:
                    logged = self._reduce(losses)
                    lr = scheduler.get_last_lr()[0]
                    runlog.scalars(step, {**{f"train/{k}": v for k, v in logged.items()}, "train/lr": lr, "epoch": epoch})
                    runlog.progress(step, logged["loss_total"], lr)
                if run.val_set is not None and (step % cfg.run.val_every == 0 or step == total):
                    self._validate(run, step)
                    stop = self._early_stop(run)
                runlog.end_step(step)
                if step % cfg.run.ckpt_every == 0 or step == total or stop:
                    self._save_state(run, step)
                if step >= total or stop:
                    break
        runlog.close()
        if stop:
            log.info("%s: stopped at step %d of %d", stop, step, total)
        final = self._reduce(losses) if losses else {}
        summary = {"steps": step, "final_loss": final.get("loss_total"),
                   "final_loss_is": f"train/loss_total of step {step}, mean over {fabric.world_size} rank(s)",
                   "best_metric": cfg.run.best_metric, "best_val": None if run.best == -math.inf else run.best,
                   "best_step": None if run.best_step < 0 else run.best_step, "early_stopped": stop is not None,
                   "seconds": round(time.perf_counter() - started, 2), "out_dir": str(self.out)}
        if fabric.is_global_zero:
            atomic_write_text(self.out / SUMMARY_FILE, json.dumps(summary, indent=2))
        return summary

    def _early_stop(self, run: TrainingRun) -> str | None:
        patience = self.cfg.run.early_stop_patience
        if patience and run.since_best >= patience:
            return (f"early stopping: {run.since_best} validations without a new best val {self.cfg.run.best_metric} "
                    f"(run.early_stop_patience {patience})")
        return None

    def _reduce(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """Mean over ranks (every rank computes the same keys at the same steps)."""
        keys = list(losses)  # loss_total, loss_last, then the last layer's components
        values = torch.stack([losses[k].float() for k in keys])
        if self.fabric.world_size > 1:
            values = self.fabric.all_reduce(values, reduce_op="mean")
        return dict(zip(keys, values.tolist()))

    def _step(self, batch: dict, on_the_fly: bool) -> dict[str, torch.Tensor]:
        fabric = self.fabric
        inputs = batch["inputs"].to(fabric.device)
        embeddings = self.model.encode(inputs) if on_the_fly else inputs
        targets = teacher_targets(self.model, batch, fabric.device)
        count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=fabric.device)
        num_targets = float(fabric.all_reduce(count, reduce_op="mean")) if fabric.world_size > 1 else float(count)
        outs = self.prompter(embeddings, all_layers=self.cfg.loss.aux_loss)
        total, layer = 0, {}
        for out in outs if isinstance(outs, list) else [outs]:  # the decoder layers, last one last
            out = self.model.with_tokens(out)
            layer = self.criterion(out.logits, out.tokens, targets, num_targets=max(num_targets, 1.0), coords=out.coords)
            total = total + layer["loss"]
        fabric.backward(total)
        if self.cfg.optim.grad_clip > 0:
            fabric.clip_gradients(self.prompter, self.optimizer, max_norm=self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        components = {k: v.detach() for k, v in layer.items() if k != "loss"}
        return {"loss_total": total.detach(), "loss_last": layer["loss"].detach(), **components}

    # ---- validation ----------------------------------------------------------------------
    def _validate(self, run: TrainingRun, step: int) -> None:
        """Metrics of the current prompter on up to val_max_images (sharded over ranks); best.safetensors when
        run.best_metric improves; TensorBoard: per-class IoU and GT | prediction overlays of the first images."""
        cfg, fabric, runlog = self.cfg, self.fabric, self.runlog
        model = WPSSAM(self.model.sam, self.unwrapped)
        result = validate(fabric, model, run.val_set, cfg.data.val_max_images)
        runlog.scalars(step, {f"val/{k}": result[k] for k in VAL_KEYS})
        runlog.scalars(step, {f"val_IoU/{row['name']}": row["IoU"] for row in result["per_class"][1:]}, csv_row=False)
        if cfg.run.tb_images and fabric.is_global_zero and runlog.tb is not None:
            for i, panel in enumerate(overlays(model, run.val_set, cfg.run.tb_images, fabric.device)):
                runlog.image(f"val_overlay/{i}", panel, step)
        metric, score = cfg.run.best_metric, result[cfg.run.best_metric]
        line = (f"step {step}: val mIoU {100 * result['mIoU']:.2f} %, paper mIoU {100 * result['paper_mIoU']:.2f} % "
                f"({result['num_images']} images)")
        if score > run.best:
            run.best, run.best_step, run.since_best = score, step, 0
            self._save_prompter(BEST_PROMPTER, step, {"val_mIoU": result["mIoU"], "val_paper_mIoU": result["paper_mIoU"],
                                                      "best_metric": metric, f"val_{metric}": score})
            runlog.info(f"{line}; saved best (step {step}, {metric} {100 * score:.2f} %)")
        else:
            run.since_best += 1
            runlog.info(f"{line}; best {metric} {100 * run.best:.2f} % at step {run.best_step} "
                        f"({run.since_best} validation(s) ago)")

    # ---- checkpoints ---------------------------------------------------------------------
    def _save_prompter(self, name: str, step: int, info: dict) -> None:
        if not self.fabric.is_global_zero:
            return
        ckpt = PrompterCheckpoint(state_dict=self.unwrapped.state_dict(),
                                  info={"step": step, **info, "train_config": self.cfg.to_dict()}, **self.meta)
        save_prompter_checkpoint(self.out / name, ckpt)

    def _save_state(self, run: TrainingRun, step: int) -> None:
        if self.fabric.is_global_zero:
            state = {"prompter": self.unwrapped.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": run.scheduler.state_dict(), "step": step, "best": run.best,
                     "best_step": run.best_step, "since_best": run.since_best,
                     "config": json.dumps(self.cfg.to_dict()), "sam_sha256": self.sam_sha}
            with atomic_path(self.out / STATE_FILE) as tmp:
                torch.save(state, tmp)
            self._save_prompter(LAST_PROMPTER, step, {})
        self.fabric.barrier()

    def _load_state(self, prompter, optimizer, scheduler, run: TrainingRun) -> None:
        path = self.out / STATE_FILE
        state = read_state(path)
        try:
            prompter.load_state_dict(state["prompter"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, EOFError, ValueError) as exc:
            raise WpsSamError(f"--resume: cannot use {path}: {str(exc).splitlines()[0]}") from None
        run.start_step, run.best = int(state["step"]), float(state["best"])
        run.best_step, run.since_best = int(state.get("best_step", -1)), int(state.get("since_best", 0))
        log.info("resuming from %s at step %d", path, run.start_step)


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> dict:
    return Trainer(cfg, resume, overwrite).run()
