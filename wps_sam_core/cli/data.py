"""`wps-sam convert-pascal-part` and `wps-sam dataset-info`; shared dataset flags for other commands."""
from __future__ import annotations

import argparse
import json

from ..errors import WpsSamError


def add_dataset_args(parser: argparse.ArgumentParser, default_split: str = "train") -> None:
    """Flags selecting a COCO part dataset: --data-root/--split (PartImageNet layout) or
    --annotations/--image-dir, plus --skip-bad. Read them back with dataset_from_args."""
    parser.add_argument("--data-root", help="dataset root: ROOT/images/<split>/, ROOT/annotations/<split>/<split>.json")
    parser.add_argument("--split", default=default_split, help=f"split name (default {default_split})")
    parser.add_argument("--annotations", help="COCO annotation JSON (instead of --data-root)")
    parser.add_argument("--image-dir", help="folder the annotation file_names are relative to (with --annotations)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip (and count) missing images and malformed annotations instead of failing")


def dataset_from_args(args: argparse.Namespace, split: str | None = None):
    """The CocoPartDataset named by add_dataset_args' flags (`split` overrides --split)."""
    from ..data.coco import CocoPartDataset

    if args.annotations:
        if args.data_root:
            raise WpsSamError("give either --data-root or --annotations/--image-dir, not both")
        if not args.image_dir:
            raise WpsSamError("--annotations needs --image-dir")
        return CocoPartDataset(args.annotations, args.image_dir, skip_bad=args.skip_bad)
    if not args.data_root:
        raise WpsSamError("no dataset: give --data-root (with --split) or --annotations and --image-dir")
    return CocoPartDataset.from_root(args.data_root, split or args.split, skip_bad=args.skip_bad)


def register(sub: argparse._SubParsersAction) -> None:
    from ..data.pascal_part import IMAGES_MODES

    p = sub.add_parser("convert-pascal-part", help="convert part label PNGs into the COCO part format")
    p.add_argument("--images", required=True, help="folder of images (<stem>.jpg/png/...)")
    p.add_argument("--labels", required=True, help="folder of label PNGs (<stem>.png; k = class k, 0 bg, 255 ignore)")
    p.add_argument("--classes", required=True, help="class list: JSON list/object or text, one name per line")
    p.add_argument("--out", required=True, help="output dataset root")
    p.add_argument("--split", required=True, help="split name, e.g. train or val")
    p.add_argument("--images-mode", choices=IMAGES_MODES, default="copy",
                   help="put images under ROOT/images/<split> by copy or symlink, or leave them (none)")
    p.add_argument("--min-area", type=int, default=1, help="drop components smaller than this (pixels)")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) unusable label/image pairs")
    p.set_defaults(func=run_convert)

    p = sub.add_parser("dataset-info", help="load and validate a COCO part dataset, print its counts")
    add_dataset_args(p)
    p.set_defaults(func=run_info)


def run_convert(args: argparse.Namespace) -> int:
    from ..data.pascal_part import convert_pascal_part

    if args.min_area < 1:
        raise WpsSamError(f"--min-area must be >= 1, got {args.min_area}")
    report = convert_pascal_part(args.images, args.labels, args.classes, args.out, args.split,
                                 images_mode=args.images_mode, min_area=args.min_area, skip_bad=args.skip_bad)
    print(f"wrote {report.annotation_file}: {report.num_images} images, {report.num_annotations} part annotations"
          f" (images in {report.image_dir})")
    if report.skip_counts:
        print(f"skipped: {report.skip_counts}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    print(json.dumps(dataset_from_args(args).summary(), indent=2))
    return 0
