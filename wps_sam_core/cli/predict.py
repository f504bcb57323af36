"""`wps-sam predict IMG... --out DIR`: label map, instance map, overlay and JSON per image file."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_model_args, segmenter_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment parts in image files")
    p.add_argument("images", nargs="+", help="image files (PNG/JPEG/...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=4)
    add_model_args(p)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from ..image_io import read_image_rgb, write_png
    from ..io_utils import atomic_write_text
    from ..viz import overlay

    seg = segmenter_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in args.images]
    for start in range(0, len(paths), max(1, args.batch_size)):
        chunk = paths[start: start + max(1, args.batch_size)]
        images = [read_image_rgb(p) for p in chunk]
        for path, image, result in zip(chunk, images, seg.segment_batch(images)):
            write_png(out / f"{path.stem}_labels.png", result.labels, rgb=False)
            write_png(out / f"{path.stem}_instances.png", result.instance_ids, rgb=False)
            write_png(out / f"{path.stem}_overlay.png", overlay(image, result.labels, result.instance_ids, result.class_names))
            payload = {"image": str(path), "model": seg.description, **result.to_json()}
            atomic_write_text(out / f"{path.stem}_parts.json", json.dumps(payload, indent=2))
            names = ", ".join(f"{i.class_name} {i.score:.2f}" for i in result.instances) or "no parts"
            print(f"{path}: {len(result.instances)} parts ({names})")
    return 0
