"""`wps-sam world`: write the procedural part world (or, with --shapes, the generic-shapes world; with --sequence,
clips of it with part track ids)."""
from __future__ import annotations

import argparse
import time

from ..data.world import DEFAULT_SIZE
from ..data.world_depth import DEFAULT_DEPTH_RANGE
from ..errors import WpsSamError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("world", help="generate the procedural part world as a COCO part dataset")
    p.add_argument("--out", required=True, help="dataset root (images/<split>/, annotations/<split>/)")
    p.add_argument("--n", type=int, required=True, help="number of images (with --sequence: of clips)")
    p.add_argument("--seed", type=int, default=0, help="same seed (and split) -> byte-identical files")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="image side in pixels")
    p.add_argument("--split", default="train", help="split name (also part of every image's random stream)")
    p.add_argument("--shapes", action="store_true",
                   help="write the class-agnostic generic-shapes world (SAM pre-training) instead")
    p.add_argument("--sequence", action="store_true",
                   help="write clips for tracking (objects move, rotate, scale, get occluded, leave and enter), "
                        "COCO video style: images with video_id and frame_id, part annotations with track_id")
    p.add_argument("--frames", type=int, default=None, help="with --sequence: frames per clip (default 16)")
    p.add_argument("--depth", action="store_true",
                   help="also an aligned depth image per image or frame (depth/<split>/, 16UC1 millimetres), K in each COCO "
                        "image's 'camera' entry and each part's GT 3D centre (centre_3d_m)")
    p.add_argument("--depth-noise", type=float, nargs="?", const=1.0, default=None, metavar="LEVEL",
                   help="implies --depth; also a sensor-like depth (depth_noisy/<split>/): noise, holes, edge "
                        "dropouts, flying pixels, speckle; LEVEL 1 (default) = RealSense-like")
    p.add_argument("--depth-range", type=float, nargs=2, default=DEFAULT_DEPTH_RANGE, metavar=("NEAR", "FAR"),
                   help="object distances in metres (default %(default)s)")
    p.set_defaults(func=run_world)


def run_world(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.frames is not None and not args.sequence:
        raise WpsSamError("--frames needs --sequence")
    depth = args.depth or args.depth_noise is not None
    if depth and args.shapes:
        raise WpsSamError("--depth/--depth-noise are for the part world and its clips, not --shapes")
    if tuple(args.depth_range) != DEFAULT_DEPTH_RANGE and not depth:
        raise WpsSamError("--depth-range needs --depth")
    if args.sequence and args.shapes:
        raise WpsSamError("--sequence and --shapes do not go together: the clips are of the part world")
    if args.sequence:
        from ..data.world_sequence import DEFAULT_FRAMES, write_sequences
        summary = write_sequences(args.out, args.n, args.frames or DEFAULT_FRAMES, args.seed, args.size, args.split,
                                  depth, args.depth_noise, tuple(args.depth_range))
        what = (f"{summary['clips']} clips, {summary['parts']} parts in {summary['tracks']} tracks "
                f"-> {summary['part_json']}")
    elif args.shapes:
        from ..data.shapes_world import write_shapes
        summary = write_shapes(args.out, args.n, args.seed, args.size, args.split)
        what = f"{summary['masks']} masks -> {summary['json']}"
    else:
        from ..data.world import write_world
        summary = write_world(args.out, args.n, args.seed, args.size, args.split, depth, args.depth_noise,
                              tuple(args.depth_range))
        what = f"{summary['parts']} parts, {summary['objects']} objects -> {summary['part_json']}"
        if depth:
            what += f" (+ depth{' and sensor-like depth' if args.depth_noise is not None else ''})"
    seconds = time.perf_counter() - start
    print(f"{summary['images']} images, {what} ({seconds:.1f} s, {1000 * seconds / summary['images']:.0f} ms/image)")
    return 0
