#!/usr/bin/env python3
"""Parts in 3D measured: 3D part-centre errors on the world's test split with depth -> docs/results.md.

    python3 training/depth_table.py [--world-dir runs/embedded] [--out docs/results.md]
        [--prompter P --sam-checkpoint S]   (default: the embedded model)

1. renders the world's held-out test split (seed 3, 100 images: the same 2D images as runs/embedded/world's test,
   since depth never changes them) twice with `--depth-noise`: objects at 0.9-1.1 m ("at 1 m", the issue's
   target) and at 0.4-3 m (errors by distance), into WORLD_DIR/world_depth_1m and WORLD_DIR/world_depth;
2. `wps-sam eval --depth`'s loop (evaluation/evaluate.py + geometry.py) for the GT-box bound and the prompter;
3. writes the tables between the DEPTH_BEGIN / DEPTH_END markers of `--out` (appended when missing) and prints
   one JSON line. One thread (as the other tables: the fastest on a shared 2-core machine).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from wps_sam_core.data.coco import CocoPartDataset
from wps_sam_core.data.world import write_world
from wps_sam_core.evaluation.evaluate import GT_BOXES, PROMPTER, evaluate
from wps_sam_core.evaluation.geometry import DISTANCE_BINS_M, bin_name
from wps_sam_core.evaluation.report import to_jsonable
from wps_sam_core.io_utils import write_marked_section
from wps_sam_core.segmenter import load_segmenter

DEPTH_BEGIN = "<!-- depth_table.py: begin -->"
DEPTH_END = "<!-- depth_table.py: end -->"
TARGET_M = 0.02  # the issue: median 3D centre error of GT-box parts <= 2 cm at 1 m, with sensor noise
SPLITS = {"world_depth_1m": (0.9, 1.1), "world_depth": (0.4, 3.0)}  # folder -> object distances (m)
FLOOR, SHORT = "GT masks", {GT_BOXES: "SAM + GT boxes", PROMPTER: "prompter"}
VARIANT_NAMES = {"noise_free": "noise-free", "sensor_noise": "sensor noise"}


def measure(seg, root: Path, split: str, n: int, seed: int, depth_range: tuple[float, float]) -> dict:
    """{row name: {variant: geometry summary}} for the GT-mask floor, the GT-box bound and the prompter."""
    if not (root / "annotations" / split / f"{split}.json").exists():
        write_world(root, n, seed, split=split, depth_noise=1.0, depth_range=depth_range)
    dataset = CocoPartDataset(root / "annotations" / split / f"{split}.json", root / "images" / split)
    result = evaluate(seg, dataset, [GT_BOXES, PROMPTER], progress=False, depth=True)
    rows = {FLOOR: result.depth_floor.compute()}
    rows.update({SHORT[m]: result.depth_metrics[m].compute() for m in (GT_BOXES, PROMPTER)})
    return {"images": result.num_images, "rows": rows}


def cm(value) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def one_metre_table(measured: dict) -> str:
    lines = ["| parts of | depth | matched parts | median (cm) | p90 (cm) | mean (cm) | matched without depth |",
             "| --- | --- |" + " ---: |" * 5]
    for name, variants in measured["rows"].items():
        for variant, m in variants.items():
            lines.append(f"| {name} | {VARIANT_NAMES[variant]} | {m['matched']} | {cm(m['median_m'])} | "
                         f"{cm(m['p90_m'])} | {cm(m['mean_m'])} | {m['no_depth']} |")
    return "\n".join(lines) + "\n"


def distance_table(measured: dict) -> str:
    bins = [bin_name(lo, hi) for lo, hi in zip(DISTANCE_BINS_M[:-1], DISTANCE_BINS_M[1:])]
    lines = ["| parts of | depth | " + " | ".join(f"{b}: median / p90 (cm), n" for b in bins) + " |",
             "| --- | --- |" + " ---: |" * len(bins)]
    for name, variants in measured["rows"].items():
        for variant, m in variants.items():
            cells = [f"{cm(b['median_m'])} / {cm(b['p90_m'])}, {b['matched']}" for b in m["by_distance"]]
            lines.append(f"| {name} | {VARIANT_NAMES[variant]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def section(seg, measured: dict, command: str, seconds: float) -> str:
    at_1m = measured["world_depth_1m"]["rows"]
    box, prompter = at_1m[SHORT[GT_BOXES]]["sensor_noise"], at_1m[SHORT[PROMPTER]]["sensor_noise"]
    met = box["median_m"] <= TARGET_M
    verdict = (f"Target (issue 15): median 3D centre error of GT-box parts <= {100 * TARGET_M:g} cm at 1 m with "
               f"sensor noise: **{cm(box['median_m'])} cm, {'met' if met else 'NOT met'}** (p90 {cm(box['p90_m'])} "
               f"cm); the prompter's: {cm(prompter['median_m'])} cm (p90 {cm(prompter['p90_m'])} cm) over its "
               f"{prompter['matched']} matched parts.")
    return "\n".join([
        DEPTH_BEGIN,
        "## Parts in 3D (`lift_to_3d`, `wps-sam eval --depth`)\n",
        f"The world's test split (seed 3) rendered with depth and RealSense-like sensor noise (`wps-sam world "
        f"--depth-noise`, data/world_depth.py: sigma = 0.1 % z + 0.2 % z^2, edge dropouts and flying pixels, holes, "
        f"speckle; 16UC1 millimetres), model: {seg.description}. A predicted part matched to a GT part (same class, "
        "mask IoU > 0.5) is lifted with `lift_to_3d` on the image's depth; its error is the distance to the GT "
        "centre, which is lift_to_3d's robust centre of the GT mask on the noise-free depth (so the noise-free "
        "GT-mask row is 0 by construction and every error is the pipeline's: masks, noise, robust centre). "
        "The images are 256 px wide with a 69 deg field of view: one pixel is 5.4 mm at 1 m, so a mask centroid "
        "off by 2 px moves the centre by 1 cm.\n",
        f"### Objects at 0.9-1.1 m ({measured['world_depth_1m']['images']} images)\n",
        one_metre_table(measured["world_depth_1m"]),
        verdict + "\n",
        f"### Objects at 0.4-3 m ({measured['world_depth']['images']} images), by the GT centre's distance\n",
        distance_table(measured["world_depth"]),
        "Thin parts (legs, tails) are mostly depth edge, where the sensor model drops or smears pixels as real "
        "stereo sensors do; they dominate the GT-mask p90. Errors grow with distance as the noise (z^2) and the "
        "metric size of a pixel (z) do.\n",
        f"Regenerate ({seconds / 60:.0f} min on one CPU thread): `{command}`\n",
        DEPTH_END,
    ]) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-dir", type=Path, default=Path("runs/embedded"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--prompter", help="default: the embedded model")
    parser.add_argument("--sam-checkpoint")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    seg = load_segmenter(args.prompter, sam_checkpoint=args.sam_checkpoint, device="cpu")
    measured = {folder: measure(seg, args.world_dir / folder, args.split, args.n, args.seed, depth_range)
                for folder, depth_range in SPLITS.items()}
    seconds = time.perf_counter() - started
    command = "python3 training/depth_table.py " + " ".join(sys.argv[1:])
    write_marked_section(args.out, section(seg, measured, command.strip(), seconds), DEPTH_BEGIN, DEPTH_END)
    box = measured["world_depth_1m"]["rows"][SHORT[GT_BOXES]]["sensor_noise"]
    print(json.dumps(to_jsonable({"table": "depth", "seconds": round(seconds, 1), "target_m": TARGET_M,
                                  "gt_boxes_1m_noisy_median_m": box["median_m"], "measured": measured})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
