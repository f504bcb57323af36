#!/usr/bin/env python3
"""Duplicate suppression measured: choose the method and `dedup_iou` on val, report it on test -> docs/results.md.

    python3 training/dedup_table.py --data runs/embedded/world [--val val --test test] [--out docs/results.md]
        [--prompter P --sam-checkpoint S]   (default: the embedded model)

1. val: `wps-sam eval`'s loop (evaluation/evaluate.py) for the GT-box bound and the prompter with every
   method of postprocess/dedup.py at each threshold of --grid (and off); the choice is the one with the
   highest prompter PQ among those whose prompter mIoU (dataset protocol) is at most --max-miou-drop points
   below "off" (the issue's limit), ties to the higher threshold (fewer masks removed);
2. test: off vs the shipped default (SegmenterSettings().dedup_iou with PartSegmenter.dedup_method) and vs
   the val choice when it differs;
3. writes both tables into `--out` between the DEDUP_BEGIN / DEDUP_END markers (appended when missing), so
   the rest of the file (training/results_table.py's) stays as it is.
One thread (as the other tables: the fastest on a shared 2-core machine).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from wps_sam_core.cli.common import add_val_test_report_args
from wps_sam_core.data.coco import CocoPartDataset
from wps_sam_core.evaluation.evaluate import GT_BOXES, PROMPTER, evaluate
from wps_sam_core.evaluation.report import format_percent, format_ratio, to_jsonable
from wps_sam_core.io_utils import atomic_write_text, write_marked_section
from wps_sam_core.postprocess.dedup import DEDUP_METHODS
from wps_sam_core.segmenter import SegmenterSettings, load_segmenter

DEDUP_BEGIN = "<!-- dedup_table.py: begin -->"
DEDUP_END = "<!-- dedup_table.py: end -->"
ROW_KEYS = ("pq", "sq", "rq", "ap", "ap50", "duplicates_per_gt", "fragments_per_gt", "mIoU", "paper_mIoU")
SHORT = {GT_BOXES: "GT boxes", PROMPTER: "prompter"}



def measure(seg, dataset, method: str, dedup_iou: float) -> dict[str, dict]:
    """{gt_boxes|prompter: {metric: value}} for one setting (both methods share one embedding pass)."""
    seg.dedup_method = method
    seg.update_settings(dedup_iou=dedup_iou)
    result = evaluate(seg, dataset, [GT_BOXES, PROMPTER], progress=False)
    out = {}
    for m in (GT_BOXES, PROMPTER):
        row = {**result.metrics[m].compute(), **result.instance_metrics[m].compute()}
        out[m] = {k: row[k] for k in ROW_KEYS} | {"tp": row["tp"], "fp": row["fp"], "fn": row["fn"]}
    return out


def cells(row: dict) -> list[str]:
    return ([format_percent(row[k]) for k in ("pq", "sq", "rq", "ap", "ap50")]
            + [format_ratio(row["duplicates_per_gt"]), format_ratio(row["fragments_per_gt"])]
            + [format_percent(row["mIoU"]), format_percent(row["paper_mIoU"]), str(row["tp"]), str(row["fp"]),
               str(row["fn"])])


HEADER = ("| {first} | PQ | SQ | RQ | mask AP | AP50 | predictions per matched GT | fragments per GT | "
          "mIoU (dataset, parts) | mIoU (paper) | TP | FP | FN |")


def table(first: str, rows: list[tuple[str, dict]]) -> str:
    lines = [HEADER.format(first=first), "| --- |" + " ---: |" * 12]
    lines += ["| " + " | ".join([name] + cells(row)) + " |" for name, row in rows]
    return "\n".join(lines) + "\n"


def val_table(sweep: dict) -> str:
    """One row per setting: the prompter's metrics (the choice) and the GT-box bound's PQ and mIoU."""
    lines = ["| setting | PQ | SQ | RQ | mask AP | AP50 | predictions per matched GT | fragments per GT | "
             "mIoU (dataset, parts) | GT boxes: PQ | GT boxes: mIoU |", "| --- |" + " ---: |" * 10]
    for key, rows in sweep.items():
        r, box = rows[PROMPTER], rows[GT_BOXES]
        cells = cells_of(r)[:8] + [format_percent(box["pq"]), format_percent(box["mIoU"])]
        lines.append("| " + " | ".join([setting_name(*key)] + cells) + " |")
    return "\n".join(lines) + "\n"


def cells_of(row: dict) -> list[str]:
    return ([format_percent(row[k]) for k in ("pq", "sq", "rq", "ap", "ap50")]
            + [format_ratio(row["duplicates_per_gt"]), format_ratio(row["fragments_per_gt"]), format_percent(row["mIoU"])])


def setting_name(method: str, dedup_iou: float) -> str:
    return "off" if dedup_iou == 0 else f"{method} {dedup_iou:g}"


def choose(sweep: dict, max_drop: float) -> tuple[str, float]:
    off = sweep[("off", 0.0)][PROMPTER]["mIoU"]
    ok = [(key, r[PROMPTER]) for key, r in sweep.items() if key[1] > 0 and off - r[PROMPTER]["mIoU"] <= max_drop / 100]
    if not ok:
        return "off", 0.0
    return max(ok, key=lambda item: (item[1]["pq"], item[0][1]))[0]


def section(args, seg, sweep: dict, chosen: tuple[str, float], test: dict, command: str, seconds: float) -> str:
    test_rows = [(f"{SHORT[m]}, {setting_name(*key)}", r[m]) for m in (GT_BOXES, PROMPTER) for key, r in test.items()]
    default = (seg.dedup_method, SegmenterSettings().dedup_iou)
    off, on = test[("off", 0.0)][PROMPTER], test[default][PROMPTER]
    box_off, box_on = test[("off", 0.0)][GT_BOXES], test[default][GT_BOXES]
    verdict = (f"On test with the shipped default ({setting_name(*default)}), the prompter's predictions per matched "
               f"GT go {off['duplicates_per_gt']:.2f} -> {on['duplicates_per_gt']:.2f} (target <= 1.1), PQ "
               f"{100 * off['pq']:.2f} -> {100 * on['pq']:.2f}, mask AP {100 * off['ap']:.2f} -> {100 * on['ap']:.2f}, "
               f"mIoU (dataset) {100 * off['mIoU']:.2f} -> {100 * on['mIoU']:.2f} ({100 * (on['mIoU'] - off['mIoU']):+.2f} "
               f"points; limit -1.00); the GT-box bound: PQ {100 * box_off['pq']:.2f} -> {100 * box_on['pq']:.2f}, "
               f"mIoU {100 * box_off['mIoU']:.2f} -> {100 * box_on['mIoU']:.2f}.")
    return "\n".join([
        DEDUP_BEGIN,
        "## Part instances and duplicate suppression (`dedup_iou`)\n",
        f"`{args.data}`, model: {seg.description}. Instance metrics (evaluation/instances.py) on the part masks "
        "before painting (after suppression): PQ = SQ x RQ per part class at IoU > 0.5, mean over classes; mask AP "
        "/ AP50 from pycocotools' COCOeval; predictions per matched GT = how many same-class predictions have "
        "IoU > 0.5 with a GT instance that has at least one (1.00 = no duplicates); fragments per GT: predictions "
        "lying mostly (> 50 %) on one GT instance. The GT-box bound prompts SAM once per GT part (GT class, score = "
        "SAM's IoU prediction), so only suppression can change it. Values in % except the two ratios.\n",
        f"### Choice on `{args.val}` ({sweep[('off', 0.0)][PROMPTER]['_images']} images, the prompter)\n",
        "Class-aware suppression on the decoder's low-res masks (postprocess/dedup.py): `greedy` = mask NMS (drop a "
        "mask whose IoU with a kept higher-scored mask of its class is > dedup_iou), `matrix` = SOLOv2 Matrix-NMS "
        "(gaussian kernel, sigma 2; kept while the decay is >= f(dedup_iou)), `merge` = the connected components of "
        "'same class and IoU > dedup_iou' (also through each other: two halves of a part and the whole are one), each "
        "becoming its best-scored mask holding the union of the component (max of the logits). Rule: the highest prompter PQ whose "
        f"prompter mIoU is at most {args.max_miou_drop:g} mIoU point(s) below off; chosen: **{setting_name(*chosen)}**.\n",
        val_table(sweep),
        f"### `{args.test}` ({test[('off', 0.0)][PROMPTER]['_images']} images): off vs the default\n",
        table("method, setting (test)", test_rows),
        verdict + "\n",
        "The tables above this section (training/results_table.py) were measured before duplicate suppression "
        "existed, i.e. as `--dedup-iou 0`; with the default, the mIoU rows change as in this table.\n",
        f"Regenerate ({seconds / 60:.0f} min on one CPU thread): `{command}`\n",
        DEDUP_END,
    ]) + "\n"


def write_section(path: Path, text: str) -> None:
    write_marked_section(path, text, DEDUP_BEGIN, DEDUP_END)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_val_test_report_args(p)
    p.add_argument("--grid", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8])
    p.add_argument("--methods", nargs="+", choices=DEDUP_METHODS, default=list(DEDUP_METHODS))
    p.add_argument("--max-miou-drop", type=float, default=1.0, help="mIoU points the choice may cost (default 1)")
    p.add_argument("--out", default="docs/results.md")
    p.add_argument("--json", help="also write every measured row here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    root = Path(args.data)
    seg = load_segmenter(args.prompter, None, args.sam_checkpoint, "cpu")
    shipped = seg.dedup_method
    val, test_set = CocoPartDataset.from_root(root, args.val), CocoPartDataset.from_root(root, args.test)

    def run(dataset, method, dedup_iou):
        rows = measure(seg, dataset, method, dedup_iou)
        for r in rows.values():
            r["_images"] = len(dataset)
        print(f"{dataset.annotation_file.parent.name} {setting_name(method, dedup_iou)}: "
              + "; ".join(f"{SHORT[m]} PQ {100 * r['pq']:.2f} AP {100 * r['ap']:.2f} dup {r['duplicates_per_gt']:.3f} "
                          f"mIoU {100 * r['mIoU']:.2f}" for m, r in rows.items()), flush=True)
        return rows

    sweep = {("off", 0.0): run(val, shipped, 0.0)}
    for method in args.methods:
        for t in args.grid:
            sweep[(method, t)] = run(val, method, t)
    chosen = choose(sweep, args.max_miou_drop)
    default = (shipped, SegmenterSettings().dedup_iou)
    test = {("off", 0.0): run(test_set, shipped, 0.0), default: run(test_set, *default)}
    if chosen != default and chosen[1] > 0:
        test[chosen] = run(test_set, *chosen)
    command = "python3 training/dedup_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    seg.dedup_method = shipped
    write_section(Path(args.out), section(args, seg, sweep, chosen, test, command, time.perf_counter() - started))
    if args.json:
        atomic_write_text(args.json, json.dumps(to_jsonable({
            "val": {setting_name(*k): v for k, v in sweep.items()}, "chosen_on_val": setting_name(*chosen),
            "test": {setting_name(*k): v for k, v in test.items()}}), indent=2) + "\n")
    print(f"chosen on {args.val}: {setting_name(*chosen)}; shipped default: {setting_name(*default)}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
