"""`wps-sam cache`: run the frozen SAM encoder once per image (and flip) and store the embeddings."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from ..modeling.sam import RANDOM_WEIGHTS, SAM_CONFIGS

    c = sub.add_parser("cache", help="run the frozen SAM encoder once per image and store the embeddings",
                       description="A rerun into the same folder finishes a killed build; a folder holding a cache "
                                   "of other weights, preprocessing or images is refused, naming the difference.")
    c.add_argument("--data", required=True, help="dataset root (PartImageNet layout)")
    c.add_argument("--split", default="train")
    c.add_argument("--out", required=True, help="cache folder")
    c.add_argument("--sam-type", default="vit_b", choices=sorted(SAM_CONFIGS), help="SAM type of --sam-checkpoint")
    c.add_argument("--sam-checkpoint", help=f"official SAM checkpoint (.pth or .safetensors), needed; "
                                            f"'{RANDOM_WEIGHTS}' = random weights (tests and smoke runs only)")
    c.add_argument("--hflip", action="store_true", help="also cache horizontally flipped variants")
    c.add_argument("--device", default="auto")
    c.add_argument("--batch-size", type=int, default=4)
    c.add_argument("--shard-size", type=int, default=64)
    c.add_argument("--skip-bad", action="store_true")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run_cache)


def run_cache(args: argparse.Namespace) -> int:
    from ..data.coco import CocoPartDataset
    from ..distill.cache import build_cache, provenance_for
    from ..io_utils import sha256_file
    from ..modeling.sam import load_sam, sam_weights_path
    from ..segmenter import resolve_device

    sam_path = sam_weights_path(args.sam_checkpoint)
    dataset = CocoPartDataset.from_root(args.data, args.split, skip_bad=args.skip_bad)
    sam = load_sam(args.sam_type, sam_path).to(resolve_device(args.device))
    provenance = provenance_for(sam, args.sam_type, sha256_file(sam_path) if sam_path else "")
    items = [(dataset.instances(i).file_name, dataset.image_path(i)) for i in range(len(dataset))]
    variants = ("orig", "hflip") if args.hflip else ("orig",)
    cache = build_cache(args.out, sam, provenance, items, variants, args.shard_size, args.batch_size,
                        progress=not args.no_progress)
    print(json.dumps({"cache": str(cache.root), "entries": len(cache.entries), "complete": cache.complete}))
    return 0
