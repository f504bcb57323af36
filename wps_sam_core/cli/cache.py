"""`wps-sam cache`: run the frozen SAM encoder once per image (and flip) and store the embeddings, on one process
or many (GPUs, nodes: Lightning Fabric, as `wps-sam train`)."""
from __future__ import annotations

import argparse
import json
import time

DEFAULT_TIMEOUT_MIN = 30.0  # torch's default process-group timeout
RANDOM_WEIGHTS_SEED = 0  # --sam-checkpoint random


def register(sub: argparse._SubParsersAction) -> None:
    from ..modeling.sam import RANDOM_WEIGHTS, SAM_CONFIGS
    from .common import add_process_args

    c = sub.add_parser("cache", help="run the frozen SAM encoder once per image and store the embeddings",
                       description="A rerun into the same folder finishes a killed build (with any number of "
                                   "processes); a folder holding a cache of other weights, preprocessing or images is "
                                   "refused, naming the difference. Several processes each encode their share of the "
                                   "shards; the cache is the same bytes as one process's.")
    c.add_argument("--data", required=True, help="dataset root (PartImageNet layout)")
    c.add_argument("--split", default="train")
    c.add_argument("--out", required=True, help="cache folder")
    c.add_argument("--sam-type", default="vit_b", choices=sorted(SAM_CONFIGS), help="SAM type of --sam-checkpoint")
    c.add_argument("--sam-checkpoint", help=f"official SAM checkpoint (.pth or .safetensors), needed; "
                                            f"'{RANDOM_WEIGHTS}' = random weights (tests and smoke runs only)")
    c.add_argument("--hflip", action="store_true", help="also cache horizontally flipped variants")
    add_process_args(c, accelerator_aliases=("--device",))
    c.add_argument("--timeout-min", type=float, default=DEFAULT_TIMEOUT_MIN,
                   help="with several processes: how long a rank waits for the others at an exchange before it stops")
    c.add_argument("--batch-size", type=int, default=4)
    c.add_argument("--shard-size", type=int, default=64)
    c.add_argument("--skip-bad", action="store_true")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run_cache)


def run_cache(args: argparse.Namespace) -> int:
    from ..data.coco import CocoPartDataset
    from ..distill.cache import provenance_for
    from ..distill.cache_build import build_cache, check_build_args
    from ..distill.processes import Ranks, launch, make_fabric
    from ..errors import WpsSamError
    from ..io_utils import sha256_file
    from ..modeling.sam import load_sam, sam_weights_path

    import torch

    variants = ("orig", "hflip") if args.hflip else ("orig",)
    check_build_args(variants, args.shard_size, args.batch_size)  # before any process starts: one line, once
    for flag, value in (("--devices", args.devices), ("--num-nodes", args.num_nodes),
                        ("--timeout-min", args.timeout_min)):
        if not value > 0:
            raise WpsSamError(f"{flag} must be > 0, got {value:g}")
    sam_path = sam_weights_path(args.sam_checkpoint)
    dataset = CocoPartDataset.from_root(args.data, args.split, skip_bad=args.skip_bad)  # a bad one: no process starts
    fabric = make_fabric(args.accelerator, args.devices, args.num_nodes, timeout_s=60 * args.timeout_min)
    launch(fabric)
    error = None
    try:  # a checkpoint one node cannot read: every rank stops, one line
        if sam_path is None:  # random weights: the same on every rank (and in every run), as training seeds them
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
        sam = load_sam(args.sam_type, sam_path).to(fabric.device)
        provenance = provenance_for(sam, args.sam_type, sha256_file(sam_path) if sam_path else "")
    except (WpsSamError, OSError) as exc:
        if fabric.world_size == 1:
            raise
        error = f"rank {fabric.global_rank}: {exc}"
    Ranks(fabric).agree(error)
    items = [(dataset.instances(i).file_name, dataset.image_path(i)) for i in range(len(dataset))]
    started = time.perf_counter()
    cache = build_cache(args.out, sam, provenance, items, variants, args.shard_size, args.batch_size,
                        progress=not args.no_progress, fabric=fabric)
    if fabric.is_global_zero:  # every rank returns here; one summary line
        print(json.dumps({"cache": str(cache.root), "entries": len(cache.entries), "complete": cache.complete,
                          "processes": fabric.world_size, "seconds": round(time.perf_counter() - started, 2)}))
    return 0
