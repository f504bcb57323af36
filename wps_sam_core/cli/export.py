"""`wps-sam export --onnx DIR`: the model as ONNX graphs (image encoder, prompter, mask decoder)."""
from __future__ import annotations

import argparse

from ..export import DEFAULT_OPSET
from .common import add_model_args, segmenter_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the model to ONNX (encoder, prompter, mask decoder)")
    p.add_argument("--onnx", required=True, metavar="DIR", help="output folder for the .onnx files and export.json")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--no-encoder", action="store_true",
                   help="skip the image encoder (e.g. when deploying an encoder engine built elsewhere)")
    p.add_argument("--fp16", action="store_true",
                   help="fp16 graphs (fp32 inputs/outputs) for onnxruntime's CUDA/TensorRT providers; slower on CPU")
    add_model_args(p, backend=False)
    p.set_defaults(func=run_export, device="cpu")  # the graphs are traced on CPU in fp32 in any case


def run_export(args: argparse.Namespace) -> int:
    from ..errors import WpsSamError
    from ..export import export_onnx

    try:
        import onnx  # noqa: F401  (the exporter writes through it)
    except ImportError:
        raise WpsSamError("ONNX export needs the `export` extra: pip install onnx onnxruntime") from None
    args.precision = "fp32"
    seg = segmenter_from_args(args)
    exported = export_onnx(seg.model, seg.class_names, args.onnx, sam_type=seg.sam_type, opset=args.opset,
                           include_encoder=not args.no_encoder, fp16=args.fp16, description=seg.description,
                           caveat=seg.caveat, object_classes=seg.object_classes)
    for name, path in exported.files.items():
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"metadata: {exported.directory / 'export.json'}")
    return 0
