"""`wps-sam train` (thin: parse, call, print); `wps-sam cache` lives in cli/cache.py."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from .common import add_process_args

    p = sub.add_parser("train", help="distil a prompter from weak labels (boxes/points)",
                       description="YAML schema: wps_sam_core/distill/config.py; overrides: --set section.key=value. "
                                   "model.sam_checkpoint is needed (an official SAM checkpoint, or 'random' for "
                                   "random weights: tests and smoke runs only). A folder holding a previous run is "
                                   "refused unless --resume or --overwrite.")
    p.add_argument("--config", help="training YAML (see training/configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--data", help="= --set data.root=...")
    p.add_argument("--out-dir", help="= --set run.out_dir=...")
    p.add_argument("--max-steps", type=int, help="= --set optim.max_steps=...")
    add_process_args(p, overrides=True)
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT_DIR/last.ckpt at its exact step; config changes are named, and refused "
                        "unless they can apply (lr, schedule, logging: see wps_sam_core/distill/run_folder.py)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the previous run in OUT_DIR (removes only the files a run writes, naming them)")
    p.set_defaults(func=run_train)


def train_overrides(args: argparse.Namespace) -> list[str]:
    """--set overrides followed by the flags' (a flag wins over a --set of the same key)."""
    flags = {"data.root": args.data, "run.out_dir": args.out_dir, "optim.max_steps": args.max_steps,
             "run.devices": args.devices, "run.num_nodes": args.num_nodes, "run.accelerator": args.accelerator}
    return list(args.overrides) + [f"{k}={v}" for k, v in flags.items() if v is not None]


def run_train(args: argparse.Namespace) -> int:
    from ..distill.config import load_train_config
    from ..distill.trainer import Trainer

    trainer = Trainer(load_train_config(args.config, train_overrides(args)), resume=args.resume,
                      overwrite=args.overwrite)
    summary = trainer.run()
    if trainer.fabric.is_global_zero:  # DDP: every rank runs this; one summary line
        print(json.dumps(summary))
    return 0
