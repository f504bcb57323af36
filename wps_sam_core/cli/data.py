"""`wps-sam convert-pascal-part` and `wps-sam dataset-info`; shared dataset flags for other commands."""
from __future__ import annotations

import argparse
import json
import logging

from ..errors import WpsSamError


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of a flag: stores into the new flag's dest and says which name to use."""

    def __init__(self, option_strings, dest, new_name: str = "", **kwargs):
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new_name = new_name

    def __call__(self, parser, namespace, values, option_string=None):
        logging.getLogger("wps_sam").warning("%s is deprecated; use %s", option_string, self.new_name)
        setattr(namespace, self.dest, values)


def add_dataset_args(parser: argparse.ArgumentParser, default_split: str = "train", skip_bad_help: str = "") -> None:
    """Flags selecting a COCO part dataset, the same in every command: --data/--split (PartImageNet layout) or
    --annotations/--images, plus --skip-bad (--data-root and --image-dir: hidden deprecated aliases). Read
    them back with dataset_from_args."""
    parser.add_argument("--data", help="dataset root: ROOT/images/<split>/, ROOT/annotations/<split>/<split>.json")
    parser.add_argument("--data-root", dest="data", action=DeprecatedAlias, new_name="--data")
    parser.add_argument("--split", default=default_split, help=f"split under --data (default {default_split})")
    parser.add_argument("--annotations", help="COCO annotation JSON (instead of --data; needs --images)")
    parser.add_argument("--images", help="folder the annotation file_names are relative to (with --annotations)")
    parser.add_argument("--image-dir", dest="images", action=DeprecatedAlias, new_name="--images")
    parser.add_argument("--skip-bad", action="store_true", help=skip_bad_help or
                        "skip (and count) missing images and malformed annotations instead of failing")


def dataset_from_args(args: argparse.Namespace, split: str | None = None):
    """The CocoPartDataset named by add_dataset_args' flags (`split` overrides --split)."""
    from ..data.coco import CocoPartDataset

    if args.annotations or args.images:
        if args.data:
            raise WpsSamError("give either --data ROOT (with --split) or --annotations FILE --images DIR, not both")
        if not (args.annotations and args.images):
            raise WpsSamError("--annotations and --images go together")
        return CocoPartDataset(args.annotations, args.images, skip_bad=args.skip_bad)
    if not args.data:
        raise WpsSamError("no dataset: give --data ROOT (with --split) or --annotations FILE --images DIR")
    return CocoPartDataset.from_root(args.data, split or args.split, skip_bad=args.skip_bad)


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
