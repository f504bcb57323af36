"""`wps-sam eval`: the prompter and the SAM baselines on a COCO-format part dataset -> JSON + markdown."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import WpsSamError
from .common import add_model_args, segmenter_from_args
from .data import add_dataset_args, dataset_from_args

DEFAULT_SPLIT = "val"


def register(sub: argparse._SubParsersAction) -> None:
    from ..data.weak_labels import POINT_MODES
    from ..evaluation.evaluate import DEFAULT_POINT_MODE, METHOD_NAMES, METHODS

    p = sub.add_parser(
        "eval", help="evaluate the prompter and SAM baselines (both metric protocols)",
        description="Evaluate on a COCO-format part dataset. Methods: "
                    + "; ".join(f"{k} = {v}" for k, v in METHOD_NAMES.items()) + ".")
    add_dataset_args(p, DEFAULT_SPLIT, "leave out (and count) missing/unreadable images and malformed annotations "
                                       "instead of failing")
    p.add_argument("--methods", nargs="+", choices=METHODS,
                   help="default: all (--backend onnxruntime: prompter; the baselines need SAM's prompt encoder)")
    p.add_argument("--point-mode", choices=POINT_MODES, default=DEFAULT_POINT_MODE,
                   help="where the GT-point baseline clicks: box centre or deep inside the mask")
    p.add_argument("--depth", action="store_true",
                   help="also 3D part-centre errors (lift_to_3d) on a dataset written with `wps-sam world --depth`, "
                        "for each depth variant it has (noise-free, sensor noise)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument("--json", required=True, help="results JSON to write")
    p.add_argument("--markdown", help="results table (default: the JSON path with .md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import GT_POINTS, METHOD_NAMES, evaluate
    from ..io_utils import atomic_write_text
    from ..evaluation.report import (
        PROTOCOL_NOTE, depth_markdown, instance_markdown, object_markdown, summary_markdown, to_jsonable, write_report,
    )

    json_path = Path(args.json)
    markdown_path = Path(args.markdown) if args.markdown else json_path.with_suffix(".md")
    if markdown_path.resolve() == json_path.resolve():
        raise WpsSamError(f"--markdown and --json name the same file: {json_path}")
    from ..evaluation.evaluate import METHODS, PROMPTER

    if args.backend == "onnxruntime" and args.methods and set(args.methods) - {PROMPTER}:
        raise WpsSamError(f"--methods {' '.join(sorted(set(args.methods) - {PROMPTER}))}: the SAM baselines prompt "
                          f"SAM's prompt encoder, which the ONNX graphs leave out; use --backend torch for them")
    args.methods = args.methods or ([PROMPTER] if args.backend == "onnxruntime" else list(METHODS))
    dataset = dataset_from_args(args)
    seg = segmenter_from_args(args)
    result = evaluate(seg, dataset, args.methods, args.point_mode, args.batch_size, args.max_images,
                      progress=not args.no_progress, skip_bad=args.skip_bad, depth=args.depth)
    results = result.results()
    title = f"Part segmentation results: {dataset.annotation_file.name}, {result.num_images} images"
    if GT_POINTS in result.metrics:
        title += f", GT points: {args.point_mode}"
    payload = {
        "title": title,
        "model": seg.description,
        "dataset": dataset.summary(),
        "settings": {
            "methods": list(result.metrics), "point_mode": args.point_mode, "batch_size": args.batch_size,
            "max_images": args.max_images, "skip_bad": args.skip_bad, "device": str(seg.device),
            "backend": seg.backend, "provider": seg.runner.provider,
            "precision": seg.precision, "score_threshold": seg.settings.score_threshold,
            "mask_threshold": seg.settings.mask_threshold, "max_instances": seg.settings.max_instances,
            "overlap": seg.settings.overlap, "dedup_iou": seg.settings.dedup_iou, "dedup_method": seg.dedup_method,
        },
        "num_images": result.num_images,
        "skipped": result.skipped,
        "seconds": round(result.seconds, 3),
        "protocols": PROTOCOL_NOTE,
        "method_names": {m: METHOD_NAMES[m] for m in result.metrics},
        "results": results,
    }
    floor = result.depth_floor.compute() if result.depth_floor is not None else None
    if floor is not None:
        payload["depth3d_gt_masks"] = floor
    atomic_write_text(json_path, json.dumps(to_jsonable(payload), indent=2, allow_nan=False) + "\n")
    write_report(results, markdown_path=markdown_path, title=title, depth_floor=floor)

    skipped = ", ".join(f"{k} {v}" for k, v in sorted(result.skipped.items())) or "none"
    print(f"{title} ({seg.description}); skipped: {skipped}; "
          f"{result.seconds:.1f} s")
    sys.stdout.write(summary_markdown(results))
    sys.stdout.write(instance_markdown(results))
    sys.stdout.write(object_markdown(results))
    sys.stdout.write(depth_markdown(results, floor))
    print(f"wrote {json_path} and {markdown_path}")
    return 0
