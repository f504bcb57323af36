"""`wps-sam` command line: thin — parse, call the library, print. User errors: one line, exit 2."""
from __future__ import annotations

import argparse
import importlib
from importlib.metadata import entry_points
import json
import logging
import sys
from pathlib import Path

from .errors import WpsSamError

log = logging.getLogger("wps_sam")

# Each module adds its subcommand with `register(subparsers)`; one line per subcommand. Packages
# outside the core (the ROS side's `bag`) plug in through the `wps_sam.commands` entry-point group,
# so wps_sam_core never imports them.
COMMAND_MODULES = (
    "wps_sam_core.cli",  # predict (below)
    "wps_sam_core.cli_world",  # world
    "wps_sam_core.cli_train",  # train, cache
    "wps_sam_core.cli_data",  # convert-pascal-part, dataset-info
    "wps_sam_core.cli_eval",  # eval
    "wps_sam_core.cli_export",  # export
)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Model-selection flags shared by every subcommand that runs the model."""
    from .sam import SAM_CONFIGS
    from .segmenter import OVERLAP_ORDERS

    parser.add_argument("--prompter", help="prompter checkpoint (.safetensors); default: the embedded model")
    parser.add_argument("--sam-type", choices=sorted(SAM_CONFIGS), help="SAM type (default: the prompter's)")
    parser.add_argument("--sam-checkpoint", help="official SAM checkpoint (.pth or .safetensors)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--mask-threshold", type=float, default=0.0)
    parser.add_argument("--max-instances", type=int, default=25)
    parser.add_argument("--overlap", choices=OVERLAP_ORDERS, default=OVERLAP_ORDERS[0],
                        help="who keeps overlapping pixels: the smaller mask (nested parts stay visible) or the higher score")


def segmenter_from_args(args: argparse.Namespace):
    from .embedded import load_embedded_segmenter
    from .segmenter import PartSegmenter, SegmenterSettings

    settings = SegmenterSettings(args.score_threshold, args.mask_threshold, args.max_instances, overlap=args.overlap)
    if args.prompter:
        seg = PartSegmenter.from_checkpoints(
            args.prompter, args.sam_type, args.sam_checkpoint, args.device, args.precision, settings
        )
    else:
        if args.sam_checkpoint:
            raise WpsSamError("--sam-checkpoint needs --prompter (the embedded model brings its own SAM)")
        seg = load_embedded_segmenter(args.device, args.precision, settings)
    log.info("using %s", seg.description)
    return seg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment parts in image files")
    p.add_argument("images", nargs="+", help="image files (PNG/JPEG/...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=4)
    add_model_args(p)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from .image_io import read_image_rgb, write_png
    from .io_utils import atomic_write_text
    from .viz import overlay

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wps-sam", description="WPS-SAM part segmentation")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for entry in entry_points(group="wps_sam.commands"):
        entry.load().register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except WpsSamError as exc:
        print(f"wps-sam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wps-sam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
