"""`wps-sam train` and `wps-sam cache` subcommands (thin: parse, call, print)."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="distil a prompter from weak labels (boxes/points)",
                       description="YAML schema: wps_sam_core/distill/config.py; overrides: --set section.key=value")
    p.add_argument("--config", help="training YAML (see training/configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--data", help="= --set data.root=...")
    p.add_argument("--out-dir", help="= --set run.out_dir=...")
    p.add_argument("--max-steps", type=int, help="= --set optim.max_steps=...")
    p.add_argument("--devices", type=int, help="= --set run.devices=...")
    p.add_argument("--accelerator", choices=["auto", "cpu", "cuda", "gpu"], help="= --set run.accelerator=...")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.ckpt at its exact step")
    p.set_defaults(func=run_train)

    c = sub.add_parser("cache", help="run the frozen SAM encoder once per image and store the embeddings")
    c.add_argument("--data", required=True, help="dataset root (PartImageNet layout)")
    c.add_argument("--split", default="train")
    c.add_argument("--out", required=True, help="cache folder")
    c.add_argument("--sam-type", default="vit_b")
    c.add_argument("--sam-checkpoint", default="")
    c.add_argument("--hflip", action="store_true", help="also cache horizontally flipped variants")
    c.add_argument("--device", default="auto")
    c.add_argument("--batch-size", type=int, default=4)
    c.add_argument("--shard-size", type=int, default=64)
    c.add_argument("--skip-bad", action="store_true")
    c.set_defaults(func=run_cache)


def run_train(args: argparse.Namespace) -> int:
    from ..distill.trainer import train
    from ..distill.config import load_train_config

    flags = {"data.root": args.data, "run.out_dir": args.out_dir, "optim.max_steps": args.max_steps,
             "run.devices": args.devices, "run.accelerator": args.accelerator}
    overrides = list(args.overrides) + [f"{k}={v}" for k, v in flags.items() if v is not None]
    summary = train(load_train_config(args.config, overrides), resume=args.resume)
    print(json.dumps(summary))
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from ..data.coco import CocoPartDataset
    from ..distill.cache import build_cache, provenance_for
    from ..image_io import read_image_rgb
    from ..io_utils import sha256_file
    from ..modeling.sam import load_sam
    from ..segmenter import resolve_device

    dataset = CocoPartDataset.from_root(args.data, args.split, skip_bad=args.skip_bad)
    sam = load_sam(args.sam_type, args.sam_checkpoint or None).to(resolve_device(args.device))
    provenance = provenance_for(sam, args.sam_type, sha256_file(args.sam_checkpoint) if args.sam_checkpoint else "")
    items = [(dataset.instances(i).file_name, (lambda p=dataset.image_path(i): read_image_rgb(p)))
             for i in range(len(dataset))]
    variants = ("orig", "hflip") if args.hflip else ("orig",)
    cache = build_cache(args.out, sam, provenance, items, variants, args.shard_size, args.batch_size)
    print(json.dumps({"cache": str(cache.root), "entries": len(cache.entries), "complete": cache.complete}))
    return 0
