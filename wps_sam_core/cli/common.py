"""Flags shared by the model-running subcommands (predict, eval, export, bag), the process flags of train and
cache, and the report scripts of training/."""
from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..segmenter import PartSegmenter

log = logging.getLogger("wps_sam")

ACCELERATORS = ("auto", "cpu", "cuda", "gpu")  # Lightning Fabric's accelerator names the CLI accepts


def add_model_args(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    """--prompter/--sam-type/--sam-checkpoint/--allow-sam-mismatch, device, precision and the SegmenterSettings
    knobs; the defaults and choices are the core's own (SegmenterSettings(), PRECISIONS, OVERLAP_ORDERS);
    `backend`: also --backend, --onnx-dir, --onnx-providers, --onnx-threads (backends/)."""
    from ..modeling.sam import RANDOM_WEIGHTS, SAM_CONFIGS
    from ..segmenter import DEFAULT_DEVICE, DEFAULT_PRECISION, OVERLAP_ORDERS, PRECISIONS, SegmenterSettings

    defaults = SegmenterSettings()
    parser.add_argument("--prompter", help="prompter checkpoint (.safetensors); default: the embedded model")
    parser.add_argument("--sam-type", choices=sorted(SAM_CONFIGS), help="SAM type (default: the prompter's)")
    parser.add_argument("--sam-checkpoint",
                        help=f"official SAM checkpoint (.pth or .safetensors); needed with --prompter; "
                             f"'{RANDOM_WEIGHTS}' = random weights (tests and smoke runs only)")
    parser.add_argument("--allow-sam-mismatch", action="store_true",
                        help="run a prompter on SAM weights other than those it was trained on (its recorded sha256)")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=list(PRECISIONS))
    parser.add_argument("--score-threshold", type=float, default=defaults.score_threshold)
    parser.add_argument("--mask-threshold", type=float, default=defaults.mask_threshold)
    parser.add_argument("--max-instances", type=int, default=defaults.max_instances)
    parser.add_argument("--overlap", choices=OVERLAP_ORDERS, default=defaults.overlap,
                        help="who keeps overlapping pixels: the smaller mask (nested parts stay visible) or the higher score")
    parser.add_argument("--dedup-iou", type=float, default=defaults.dedup_iou,
                        help="one part, one instance: same-class masks overlapping more than this mask IoU (also "
                             "through each other) become one, the best-scored with their union, in [0, 1]; 0 = off")
    if backend:
        add_backend_args(parser)


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    from ..backends import BACKENDS, DEFAULT_BACKEND, DEFAULT_PROVIDERS

    parser.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                        help="what runs the model: torch, or onnxruntime on the graphs of wps-sam export --onnx")
    parser.add_argument("--onnx-dir", default="",
                        help="onnxruntime: a folder written by wps-sam export --onnx; default: the model named by the "
                             "other flags, exported on first use into the cache ($WPS_SAM_CACHE_DIR, else "
                             "~/.cache/wps_sam)/onnx")
    parser.add_argument("--onnx-providers", default=DEFAULT_PROVIDERS,
                        help="onnxruntime execution providers in order of preference, e.g. cuda,cpu "
                             "(default: tensorrt, cuda, cpu: the first one installed runs)")
    parser.add_argument("--onnx-threads", type=int, default=0,
                        help="onnxruntime intra-op threads (0 = one per physical core)")


def add_process_args(parser: argparse.ArgumentParser, overrides: bool = False,
                     accelerator_aliases: tuple[str, ...] = ()) -> None:
    """--accelerator/--devices/--num-nodes: the Lightning Fabric processes of `wps-sam train` and `wps-sam cache`.
    Defaults: RunConfig()'s; `overrides` (train): None, so that only a flag given overrides the config's run.* key."""
    from ..distill.config import RunConfig

    defaults = RunConfig()
    key = "= --set run.{}=...: " if overrides else ""
    old = f" ({', '.join(accelerator_aliases)}: the old name)" if accelerator_aliases else ""
    parser.add_argument("--accelerator", *accelerator_aliases, dest="accelerator", choices=ACCELERATORS,
                        default=None if overrides else defaults.accelerator,
                        help=key.format("accelerator") + "what the processes run on" + old)
    parser.add_argument("--devices", type=int, default=None if overrides else defaults.devices,
                        help=key.format("devices") + "processes per node (GPUs, or CPU processes)")
    parser.add_argument("--num-nodes", type=int, default=None if overrides else defaults.num_nodes,
                        help=key.format("num_nodes") + "nodes (under torchrun or SLURM)")


def segmenter_from_args(args: argparse.Namespace) -> PartSegmenter:
    """The segmenter add_model_args' flags name (wps_sam_core.segmenter.load_segmenter's rule)."""
    from ..segmenter import SegmenterSettings, load_segmenter

    settings = SegmenterSettings(args.score_threshold, args.mask_threshold, args.max_instances, overlap=args.overlap,
                                 dedup_iou=args.dedup_iou)
    seg = load_segmenter(args.prompter, args.sam_type, args.sam_checkpoint, args.device, args.precision, settings,
                         allow_sam_mismatch=args.allow_sam_mismatch, backend=getattr(args, "backend", "torch"),
                         onnx_dir=getattr(args, "onnx_dir", ""), onnx_providers=getattr(args, "onnx_providers", ""),
                         onnx_threads=getattr(args, "onnx_threads", 0))
    log.info("using %s", seg.description)
    return seg


def add_val_test_report_args(parser: argparse.ArgumentParser) -> None:
    """The report scripts of training/ that choose a setting on a world's val split and report it on test."""
    parser.add_argument("--data", required=True, help="world root (wps-sam world --out)")
    parser.add_argument("--val", default="val")
    parser.add_argument("--test", default="test")
    parser.add_argument("--prompter", help="default: the embedded model")
    parser.add_argument("--sam-checkpoint")
