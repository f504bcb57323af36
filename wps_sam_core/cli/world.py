"""`wps-sam world`: write the procedural part world (or, with --shapes, the generic-shapes world)."""
from __future__ import annotations

import argparse
import time

from ..data.world import DEFAULT_SIZE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("world", help="generate the procedural part world as a COCO part dataset")
    p.add_argument("--out", required=True, help="dataset root (images/<split>/, annotations/<split>/)")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="same seed (and split) -> byte-identical files")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="image side in pixels")
    p.add_argument("--split", default="train", help="split name (also part of every image's random stream)")
    p.add_argument("--shapes", action="store_true",
                   help="write the class-agnostic generic-shapes world (SAM pre-training) instead")
    p.set_defaults(func=run_world)


def run_world(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.shapes:
        from ..data.shapes_world import write_shapes
        summary = write_shapes(args.out, args.n, args.seed, args.size, args.split)
        what = f"{summary['masks']} masks -> {summary['json']}"
    else:
        from ..data.world import write_world
        summary = write_world(args.out, args.n, args.seed, args.size, args.split)
        what = f"{summary['parts']} parts, {summary['objects']} objects -> {summary['part_json']}"
    seconds = time.perf_counter() - start
    print(f"{summary['images']} images, {what} ({seconds:.1f} s, {1000 * seconds / summary['images']:.0f} ms/image)")
    return 0
