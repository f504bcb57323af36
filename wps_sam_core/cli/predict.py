"""`wps-sam predict IMG... --out DIR`: label map, instance map, overlay and JSON per image file."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import WpsSamError
from .common import add_model_args, segmenter_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment parts in image files")
    p.add_argument("images", nargs="+", help="image files (PNG/JPEG/...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--depth", nargs="+", metavar="DEPTH",
                   help="aligned depth images, one per image in the same order (16-bit PNG in millimetres, as "
                        "RealSense records; float TIFF/.npy in metres): parts lifted to 3D (lift_to_3d) into the "
                        "JSON (parts_3d) and the overlay; needs --intrinsics")
    p.add_argument("--intrinsics", nargs=4, type=float, metavar=("FX", "FY", "CX", "CY"),
                   help="pinhole K of the depth image, in pixels (CameraInfo.k[0], k[4], k[2], k[5])")
    p.add_argument("--depth-scale", type=float, default=None,
                   help="metres per depth unit (default: 0.001 for integer depth, 1 for float depth)")
    add_model_args(p)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from ..image_io import read_image_rgb, write_png
    from ..io_utils import atomic_write_text
    from ..viz import overlay, overlay_3d

    depths = _depth_paths(args)
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
            payload = {"image": str(path), "model": seg.description, **result.to_json()}
            if depths:
                lifted = _lift(result, depths[path], args)
                payload["parts_3d"] = lifted.to_json()
                picture = overlay_3d(image, result, lifted, upscale=max(1, 640 // max(image.shape[:2])))
            else:
                picture = overlay(image, result.labels, result.instance_ids, result.class_names)
            write_png(out / f"{path.stem}_overlay.png", picture)
            atomic_write_text(out / f"{path.stem}_parts.json", json.dumps(payload, indent=2))
            names = ", ".join(f"{i.class_name} {i.score:.2f}" for i in result.instances) or "no parts"
            objects = "; ".join(f"{o.object_class} #{o.object_id}: parts {', '.join(map(str, o.part_ids))}"
                                for o in result.objects)
            in_objects = f" in {len(result.objects)} object{'s' * (len(result.objects) != 1)} ({objects})"
            print(f"{path}: {len(result.instances)} parts ({names})" + (in_objects if result.objects else ""))
    return 0


def _depth_paths(args: argparse.Namespace) -> dict[Path, Path]:
    """image path -> its depth path; checked before the model loads (a typo should not cost a model load)."""
    if not args.depth:
        if args.intrinsics or args.depth_scale is not None:
            raise WpsSamError("--intrinsics and --depth-scale need --depth")
        return {}
    if args.intrinsics is None:
        raise WpsSamError("--depth needs --intrinsics FX FY CX CY (the depth image's pinhole K in pixels)")
    if len(args.depth) != len(args.images):
        raise WpsSamError(f"--depth needs one depth image per image: {len(args.images)} images, "
                          f"{len(args.depth)} depth images")
    return {Path(i): Path(d) for i, d in zip(args.images, args.depth)}


def _lift(result, depth_path: Path, args: argparse.Namespace):
    from ..postprocess.geometry3d import CameraIntrinsics, lift_to_3d

    depth = read_depth_image(depth_path)
    scale = args.depth_scale if args.depth_scale is not None else (0.001 if depth.dtype.kind in "ui" else 1.0)
    fx, fy, cx, cy = args.intrinsics
    h, w = result.labels.shape
    return lift_to_3d(result, depth, CameraIntrinsics(fx, fy, cx, cy, w, h), scale)


def read_depth_image(path: Path):
    """A depth image: .npy (any numeric dtype) or an image file read unchanged (16-bit PNG, float TIFF)."""
    import cv2
    import numpy as np

    if path.suffix.lower() == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise WpsSamError(f"cannot read depth {path}: {exc}") from None
    else:
        depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise WpsSamError(f"cannot read depth image {path}")
    if depth.ndim != 2:
        raise WpsSamError(f"depth {path} must be one channel (16UC1 or 32FC1), got shape {depth.shape}")
    return depth
