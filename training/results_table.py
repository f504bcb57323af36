#!/usr/bin/env python3
"""Mini-reproduction table on a held-out world split -> docs/results.md (and the model card's metrics).

    python3 training/results_table.py --data runs/embedded/world --split test \
        --box-prompter runs/embedded/box/best.safetensors --point-prompter runs/embedded/point/best.safetensors \
        --sam-checkpoint runs/embedded/tiny_sam/sam.safetensors [--out docs/results.md] [--model-card FILE]

Runs `wps-sam eval` twice on the same images: the box-trained prompter with both SAM baselines
(GT boxes = the upper bound, GT points), then the point-trained prompter alone; merges the four rows
into one table with both metric protocols (report.py's columns) and per-class tables.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from wps_sam_core.evaluation.evaluate import METHOD_NAMES
from wps_sam_core.evaluation.report import (
    INSTANCE_NOTE, PROTOCOL_NOTE, instance_markdown, per_class_markdown, summary_markdown, to_jsonable,
)
from wps_sam_core.io_utils import atomic_write_text

WPS_BOX, WPS_POINT = "WPS-SAM (box-trained prompter)", "WPS-SAM (point-trained prompter)"
ROW_ORDER = (METHOD_NAMES["gt_boxes"], METHOD_NAMES["gt_points"], WPS_BOX, WPS_POINT)


REGRESSION_IMAGES = 8  # test/test_embedded_model.py re-measures these first images of the split


def run_eval(args: argparse.Namespace, prompter: str, methods: list[str], json_path: Path, *extra: str) -> dict:
    command = [sys.executable, "-m", "wps_sam_core.cli", "eval", "--data", args.data, "--split", args.split,
               "--prompter", prompter, "--sam-type", args.sam_type, "--sam-checkpoint", args.sam_checkpoint,
               "--methods", *methods, "--point-mode", args.point_mode, "--device", "cpu", "--no-progress",
               "--json", str(json_path), *extra]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return json.loads(json_path.read_text())


def world_seed(args: argparse.Namespace) -> int:
    annotations = Path(args.data) / "annotations" / args.split / f"{args.split}.json"
    return int(json.loads(annotations.read_text())["info"]["seed"])


def merge(box_run: dict, point_run: dict) -> dict[str, dict]:
    rows = dict(box_run["results"])
    rows[WPS_BOX] = rows.pop(METHOD_NAMES["prompter"])
    rows[WPS_POINT] = point_run["results"][METHOD_NAMES["prompter"]]
    return {name: rows[name] for name in ROW_ORDER}


def pretraining_note(args: argparse.Namespace) -> str:
    """What the SAM saw in pre-training, from the model card (when given): it explains the point rows."""
    if not args.model_card or not Path(args.model_card).is_file():
        return ""
    pre = json.loads(Path(args.model_card).read_text())["sam"]["pretraining"]
    stages = pre.get("stages") or [pre]  # cards before the two-stage recipe had one stage at the top level
    described = [f"{st['steps']} steps x {st['config']['images_per_step']} images x {st['config']['prompts_per_image']} "
                 f"prompts with {100 * st['config']['point_fraction']:.0f} % point prompts" for st in stages]
    note = (f"The tiny SAM was pre-trained class-agnostically on the generic-shapes world in {len(stages)} stage(s): "
            + "; then ".join(described) + f" ({sum(st['wall_seconds'] for st in stages) / 60:.0f} wall-minutes in all, "
            "one CPU thread)")
    if all(st["config"]["point_fraction"] == 0 for st in stages):
        note += (": single clicks are outside its training distribution, which is what the GT-point row and the "
                 "point-trained prompter measure")
    return note + ".\n"


def markdown(rows: dict[str, dict], box_run: dict, args: argparse.Namespace, command: str) -> str:
    upper, box = rows[ROW_ORDER[0]]["mIoU"], rows[WPS_BOX]["mIoU"]
    point = rows[WPS_POINT]["mIoU"]
    lines = [
        "# Mini-reproduction on the procedural part world\n",
        f"Held-out split `{args.split}` of `{args.data}`: {box_run['num_images']} images, "
        f"{box_run['dataset'].get('instances', '?')} part instances, {len(rows[ROW_ORDER[0]]['per_class']) - 1} part classes. "
        f"Tiny SAM pre-trained class-agnostically on the generic-shapes world; prompters trained on the part "
        f"world's train split from boxes only or from one interior click per part. GT points: `{args.point_mode}`.\n",
        summary_markdown(rows),
        f"WPS-SAM(box) vs the GT-box upper bound: {100 * (box - upper):+.2f} mIoU points (dataset protocol); "
        f"vs WPS-SAM(point): {100 * (box - point):+.2f}.\n",
        pretraining_note(args),
        PROTOCOL_NOTE + "\n",
    ]
    if instance_markdown(rows):  # evaluations since the instance metrics (issue 14) also have these
        lines += ["Part instances:\n", instance_markdown(rows), INSTANCE_NOTE + "\n"]
    lines += [
        f"Regenerate: `{command}`\n",
    ]
    for name, metrics in rows.items():
        lines += [f"## Per class: {name}\n", per_class_markdown(metrics)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--box-prompter", required=True)
    p.add_argument("--point-prompter", required=True)
    p.add_argument("--sam-type", default="tiny")
    p.add_argument("--sam-checkpoint", required=True)
    p.add_argument("--point-mode", default="interior")
    p.add_argument("--out", default="docs/results.md")
    p.add_argument("--model-card", help="model_card.json whose `metrics` to update with the four rows")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        box_run = run_eval(args, args.box_prompter, ["gt_boxes", "gt_points", "prompter"], Path(tmp) / "box.json")
        point_run = run_eval(args, args.point_prompter, ["prompter"], Path(tmp) / "point.json")
        small_run = run_eval(args, args.box_prompter, ["gt_boxes", "prompter"], Path(tmp) / "small.json",
                             "--max-images", str(REGRESSION_IMAGES))
    rows = merge(box_run, point_run)
    command = "python3 training/results_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    atomic_write_text(args.out, markdown(rows, box_run, args, command))
    summary = {name: {k: rows[name][k] for k in ("mIoU", "paper_mIoU", "mAcc", "paper_mAcc")} for name in rows}
    if args.model_card:
        card = json.loads(Path(args.model_card).read_text())
        card["metrics"] = to_jsonable({"split": f"{args.data}:{args.split}", "num_images": box_run["num_images"],
                                       "point_mode": args.point_mode, "rows": summary})
        card["regression_check"] = {
            "what": f"first {REGRESSION_IMAGES} images of the same split (test/test_embedded_model.py renders them "
                    f"again with write_world and asserts mIoU >= these - a small margin)",
            "world_seed": world_seed(args), "split": args.split, "images": REGRESSION_IMAGES,
            "mIoU": {method: small_run["results"][METHOD_NAMES[method]]["mIoU"] for method in ("gt_boxes", "prompter")},
        }
        atomic_write_text(args.model_card, json.dumps(card, indent=2) + "\n")
    print(json.dumps(to_jsonable(summary), indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
