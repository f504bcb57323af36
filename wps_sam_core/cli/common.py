"""Model-selection flags shared by every subcommand that runs the model (predict, eval, export, bag)."""
from __future__ import annotations

import argparse
import logging

from ..errors import WpsSamError

log = logging.getLogger("wps_sam")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Model-selection flags shared by every subcommand that runs the model."""
    from ..modeling.sam import SAM_CONFIGS
    from ..segmenter import OVERLAP_ORDERS

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
    from ..embedded import load_embedded_segmenter
    from ..segmenter import PartSegmenter, SegmenterSettings

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
