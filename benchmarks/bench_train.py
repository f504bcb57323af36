"""P1: a training epoch from the embedding cache vs the reference-style on-the-fly encoder -> one JSON line.

Real trainer pieces, same weights, same batches: a handful of 1024-px procedural-world images,
full-size SAM (vit_b, random weights) and the reference-size prompter; `cache.build_cache` writes
the cache, `DistillDataset` + `collate` + `epoch_batches` feed `Trainer._step` (one Fabric, CPU).
Both modes start every epoch from the same prompter/optimizer state, so their losses must agree
(fp16 cache vs fp32 embeddings) — printed as a check. The one-time cache build is reported with the
number of epochs after which it has paid for itself. Target: cached epoch >= 30x faster.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

from common import emit, machine, set_threads, stats, timed

from wps_sam_core.data.coco import CocoPartDataset
from wps_sam_core.data.world import write_world
from wps_sam_core.distill.cache import build_cache, provenance_for
from wps_sam_core.distill.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from wps_sam_core.distill.dataset import DistillDataset, collate, dataset_key, epoch_batches
from wps_sam_core.distill.losses import WPSCriterion
from wps_sam_core.distill.trainer import Trainer
from wps_sam_core.image_io import read_image_rgb
from wps_sam_core.modeling.prompter import Prompter, PrompterConfig
from wps_sam_core.modeling.sam import get_sam_config, load_sam
from wps_sam_core.modeling.wpssam import WPSSAM

TARGET_SPEEDUP = 30.0
SEED = 42


def make_trainer(root: Path, sam_type: str, batch_size: int) -> tuple[Trainer, CocoPartDataset]:
    """A Trainer wired as `Trainer.run` wires it, minus the loop (which adds logging and checkpoints)."""
    import lightning as L

    cfg = TrainConfig(data=DataConfig(root=str(root), supervision="box"), model=ModelConfig(sam_type=sam_type),
                      optim=OptimConfig(batch_size=batch_size, grad_clip=0.1),
                      run=RunConfig(out_dir=str(root / "run"), accelerator="cpu", seed=SEED, progress=False))
    trainer = Trainer(cfg)
    trainer.fabric = fabric = L.Fabric(accelerator="cpu", devices=1, precision="32-true")
    fabric.seed_everything(SEED, verbose=False)
    train_set = CocoPartDataset.from_root(root, "train")
    sam_cfg = get_sam_config(sam_type)
    prompter = Prompter(PrompterConfig(num_classes=train_set.num_classes, prompt_dim=sam_cfg.prompt_embed_dim),
                        sam_cfg.embedding_size)
    trainer.model = WPSSAM(load_sam(sam_type), prompter)
    optimizer = torch.optim.AdamW(prompter.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    trainer.prompter, trainer.optimizer = fabric.setup(prompter, optimizer)
    trainer.criterion = WPSCriterion(train_set.num_classes, cfg.loss)
    return trainer, train_set


def run_epoch(trainer: Trainer, data: DistillDataset, batch_size: int, on_the_fly: bool, losses: list[float]) -> None:
    batches = epoch_batches(len(data), batch_size, 0, SEED, 0, 1, hflip=False)
    loader = torch.utils.data.DataLoader(data, batch_sampler=batches, collate_fn=collate, num_workers=0)
    for step, batch in enumerate(loader):
        torch.manual_seed(SEED * 7919 + step)  # as Trainer._loop: same dropout in both modes
        losses.append(float(trainer._step(batch, on_the_fly)["loss"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sam-type", default="vit_b")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=1024, help="side of the square world images")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--cached-repeats", type=int, default=5)
    ap.add_argument("--fly-repeats", type=int, default=1, help="on-the-fly epochs (each costs `images` encoder passes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        write_world(root, args.images, 0, args.size, "train")
        trainer, train_set = make_trainer(root, args.sam_type, args.batch_size)
        model = trainer.model
        items = [(dataset_key(train_set, i), (lambda i=i: read_image_rgb(train_set.image_path(i))))
                 for i in range(len(train_set))]
        cache = None

        def build():
            nonlocal cache
            cache = build_cache(root / "cache", model.sam, provenance_for(model.sam, args.sam_type), items,
                                batch_size=1, progress=False)
        cache_build_s = timed(build)
        image_size = get_sam_config(args.sam_type).image_size
        data = {"cached": DistillDataset.create(train_set, "box", SEED, image_size, cache),
                "on_the_fly": DistillDataset.create(train_set, "box", SEED, image_size, None)}
        start_prompter = copy.deepcopy(trainer.prompter.state_dict())
        start_optimizer = copy.deepcopy(trainer.optimizer.state_dict())
        times: dict[str, list[float]] = {"cached": [], "on_the_fly": []}
        losses: dict[str, list[float]] = {"cached": [], "on_the_fly": []}
        plan = ["cached"] + ["on_the_fly", "cached"] * args.fly_repeats
        plan += ["cached"] * max(0, args.cached_repeats - plan.count("cached"))
        for mode in plan:  # interleaved, so load drift hits both modes
            trainer.prompter.load_state_dict(start_prompter)
            trainer.optimizer.load_state_dict(start_optimizer)
            epoch_losses: list[float] = []
            times[mode].append(timed(lambda: run_epoch(trainer, data[mode], args.batch_size, mode == "on_the_fly",
                                                       epoch_losses)))
            losses[mode] = epoch_losses
    cached, fly = stats(times["cached"]), stats(times["on_the_fly"])
    speedup = fly["median"] / cached["median"]
    rel_diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses["cached"], losses["on_the_fly"]))
    emit({
        "benchmark": "P1_train", "sam_type": args.sam_type, "images": args.images, "image_px": args.size,
        "batch_size": args.batch_size, "steps_per_epoch": len(losses["cached"]),
        "prompter_params_M": round(sum(p.numel() for p in trainer.prompter.parameters()) / 1e6, 2),
        "threads": threads, **info,
        "epoch_cached_s": cached, "epoch_on_the_fly_s": fly,
        "speedup": round(speedup, 1), "speedup_best": round(fly["min"] / cached["min"], 1),
        "meets_target": speedup >= TARGET_SPEEDUP, "target_speedup": TARGET_SPEEDUP,
        "cache_build_s": round(cache_build_s, 2),
        "cache_pays_off_after_epochs": round(cache_build_s / max(fly["median"] - cached["median"], 1e-9), 2),
        "loss_max_rel_diff_cached_vs_on_the_fly": round(rel_diff, 5),
    })


if __name__ == "__main__":
    main()
