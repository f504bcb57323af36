#!/usr/bin/env python3
"""Parts linked to their object, measured: choose the grouping on val, report it on test -> docs/results.md.

    python3 training/objects_table.py --data runs/embedded/world [--val val --test test] [--out docs/results.md]
        [--radii 1 2 3 5] [--gaps 2 5 8 12 20] [--json FILE] [--prompter P --sam-checkpoint S]
        (default: the embedded model)

1. each split is segmented ONCE (one SAM embedding per image): the GT part masks themselves (the grouping
   alone), SAM + GT boxes and the prompter (the segmenter's masks, painted as segment() paints them);
2. val: every method of postprocess/objects.py at every contact radius of --radii (and "attach" at every max
   gap of --gaps) groups those parts, scored by evaluation/objects.py (GT object of every part: the world's
   `object_id`); the choice is the highest prompter part accuracy (the shipped use), ties to SAM + GT boxes,
   then GT masks, then the smaller radius and gap;
3. test: the shipped default (objects.DEFAULT_GROUPING, DEFAULT_CONTACT_RADIUS, DEFAULT_MAX_GAP), the val
   choice when it differs, and every method at its best val setting (the baselines "none" / "class" too);
4. writes the tables between the OBJECTS_BEGIN / OBJECTS_END markers of --out (appended when missing).
One thread, as the other tables.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from wps_sam_core.cli.common import add_val_test_report_args
from wps_sam_core.data.coco import CocoPartDataset
from wps_sam_core.evaluation.evaluate import EvalBatch, predict_gt_boxes, predict_prompter
from wps_sam_core.evaluation.objects import ObjectMetrics, gt_object_ids
from wps_sam_core.evaluation.report import format_percent, to_jsonable
from wps_sam_core.io_utils import atomic_write_text, write_marked_section
from wps_sam_core.postprocess.objects import (
    DEFAULT_CONTACT_RADIUS, DEFAULT_GROUPING, DEFAULT_MAX_GAP, GROUPING_METHODS, group_parts,
)
from wps_sam_core.segmenter import load_segmenter

OBJECTS_BEGIN = "<!-- objects_table.py: begin -->"
OBJECTS_END = "<!-- objects_table.py: end -->"
GT_MASKS, GT_BOXES, PROMPTER = "GT masks", "SAM + GT boxes", "prompter"
SOURCES = (GT_MASKS, GT_BOXES, PROMPTER)
NO_RADIUS = ("class", "none")  # methods that do not look at contact
COLUMNS = (("part_accuracy", "part accuracy"), ("pair_precision", "pair precision"), ("pair_recall", "pair recall"),
           ("pair_f1", "pair F1"), ("objects_exact", "objects exact"),
           ("objects_exact_given_detected", "objects exact (all parts detected)"))



def segment_split(seg, dataset: CocoPartDataset, batch_size: int = 4) -> list[dict]:
    """Per image: GT masks / classes / object ids and, per source, the painted parts' masks and class ids."""
    objects_of = gt_object_ids(dataset.annotation_file)
    if objects_of is None:
        raise SystemExit(f"{dataset.annotation_file}: part annotations carry no object_id (the world's do)")
    images = []
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        embeddings, geometries = seg.embed([s.image for s in samples])
        batch = EvalBatch(list(range(start, start + len(samples))), samples, embeddings, geometries)
        predicted = {GT_BOXES: predict_gt_boxes(seg, batch), PROMPTER: predict_prompter(seg, batch)}
        for k, sample in enumerate(samples):
            image = {"gt": (sample.masks, list(sample.labels), [objects_of[int(a)] for a in sample.annotation_ids]),
                     GT_MASKS: (sample.masks, list(sample.labels))}
            for source, masks in predicted.items():
                painted = masks[k].assemble(seg.class_names, seg.settings.overlap).instances
                image[source] = (np.array([p.mask for p in painted]).reshape(-1, *sample.masks.shape[1:]),
                                 [p.class_id for p in painted])
            images.append(image)
    return images


def score(images: list[dict], object_classes, method: str, radius: int, max_gap: float) -> dict[str, dict]:
    """{source: ObjectMetrics.compute()} of one grouping setting."""
    out = {}
    for source in SOURCES:
        metrics = ObjectMetrics()
        for image in images:
            masks, classes = image[source]
            groups = group_parts(list(masks), [object_classes[c - 1] for c in classes], classes, method, radius,
                                 max_gap)
            metrics.add(*image["gt"], masks, classes, list(groups + 1))
        out[source] = metrics.compute()
    return out


def setting_name(method: str, radius: int, max_gap: float) -> str:
    if method in NO_RADIUS:
        return method
    return f"{method}, radius {radius} px" + (f", max gap {max_gap:g}" if method == "attach" else "")


def table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| setting | parts | " + " | ".join(t for _, t in COLUMNS) + " | pairs TP / FP / FN |",
             "| --- | --- |" + " ---: |" * (len(COLUMNS) + 1)]
    for name, by_source in rows:
        for source, r in by_source.items():
            lines.append("| " + " | ".join([name, source] + [format_percent(r[k]) for k, _ in COLUMNS]
                                           + [f"{r['pair_tp']} / {r['pair_fp']} / {r['pair_fn']}"]) + " |")
    return "\n".join(lines) + "\n"


def choose(sweep: dict) -> tuple[str, int, float]:
    candidates = [k for k in sweep if k[0] not in NO_RADIUS]
    return max(candidates, key=lambda k: tuple(sweep[k][s]["part_accuracy"] for s in (PROMPTER, GT_BOXES, GT_MASKS))
               + (-k[1], -k[2]))


def section(args, seg, sweep: dict, chosen, test: dict, counts: dict, command: str, seconds: float) -> str:
    default = (DEFAULT_GROUPING, DEFAULT_CONTACT_RADIUS, DEFAULT_MAX_GAP)
    shipped = test[default]
    verdict = (f"On `{args.test}` with the shipped default ({setting_name(*default)}): part accuracy "
               + ", ".join(f"{s} {format_percent(shipped[s]['part_accuracy'])} %" for s in SOURCES)
               + "; objects recovered exactly " + ", ".join(f"{s} {format_percent(shipped[s]['objects_exact'])} %"
                                                             for s in SOURCES) + ".")
    return "\n".join([
        OBJECTS_BEGIN,
        "## Parts linked to their object (`object_id`)\n",
        f"`{args.data}`, model: {seg.description}. Each part is linked to its object from the class-to-object "
        "table (the dataset's `supercategory`) and how the part masks touch (postprocess/objects.py). Scored by "
        "evaluation/objects.py against the world's GT object of every part, on the parts matched to a GT part "
        "(same class, mask IoU > 0.5): part accuracy = the matched parts whose predicted object holds exactly the "
        "matched parts of their GT object; pair precision / recall / F1 over the pairs of matched parts of one "
        "image ('same object' as the positive); objects exact = GT objects with every part matched and one "
        "predicted object made of exactly their predictions, over all GT objects and over those whose parts were "
        "all matched. GT masks = the grouping alone on the GT part masks; SAM + GT boxes and the prompter = the "
        "painted parts the segmenter publishes. Values in %.\n",
        f"Data: `{args.val}` {counts[args.val]}, `{args.test}` {counts[args.test]}.\n",
        f"### Choice on `{args.val}`\n",
        "Methods: `attach` = each part joins the larger part of another class of its object class that it touches "
        "most (objects = the trees), and a part touching none to the nearest one within max gap x sqrt(its area) "
        "pixels; `attach_touching` = the same without that fallback; `touch` = connected components of touching parts "
        "of different classes of one object class; `class` = one object per object class present; `none` = every "
        "part alone. Contact: pixels within the radius (chessboard) of the other part. Rule: the highest prompter "
        "part accuracy, ties to SAM + GT boxes, then GT masks, then the smaller radius and gap; chosen: "
        f"**{setting_name(*chosen)}**.\n",
        table([(setting_name(*k), v) for k, v in sweep.items()]),
        f"### `{args.test}`\n",
        table([(setting_name(*k), v) for k, v in test.items()]),
        verdict + "\n",
        f"Regenerate ({seconds / 60:.1f} min on one CPU thread): `{command}`\n",
        OBJECTS_END,
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_val_test_report_args(p)
    p.add_argument("--radii", type=int, nargs="+", default=[1, 2, 3, 5])
    p.add_argument("--gaps", type=float, nargs="+", default=[2, 5, 8, 12, 20], help="attach's max gaps to try")
    p.add_argument("--out", default="docs/results.md")
    p.add_argument("--json", help="also write every measured row here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    root = Path(args.data)
    seg = load_segmenter(args.prompter, None, args.sam_checkpoint, "cpu")
    val, test_set = CocoPartDataset.from_root(root, args.val), CocoPartDataset.from_root(root, args.test)
    val_images, test_images = segment_split(seg, val), segment_split(seg, test_set)
    counts = {split: f"{len(images)} images, {sum(len(i['gt'][0]) for i in images)} parts, "
                     f"{sum(len(set(i['gt'][2])) for i in images)} objects"
              for split, images in ((args.val, val_images), (args.test, test_images))}
    settings = [("attach", r, g) for r in args.radii for g in args.gaps]
    settings += [(m, r, 0.0) for m in GROUPING_METHODS if m not in NO_RADIUS and m != "attach" for r in args.radii]
    settings += [(m, 0, 0.0) for m in NO_RADIUS]
    sweep = {}
    for key in settings:
        sweep[key] = score(val_images, seg.object_classes, *key)
        print(f"{args.val} {setting_name(*key)}: " + "; ".join(
            f"{s} part acc {100 * r['part_accuracy']:.2f} F1 {100 * r['pair_f1']:.2f}" for s, r in sweep[key].items()),
            flush=True)
    chosen = choose(sweep)
    default = (DEFAULT_GROUPING, DEFAULT_CONTACT_RADIUS, DEFAULT_MAX_GAP)
    best = [max((k for k in sweep if k[0] == m), key=lambda k: sweep[k][PROMPTER]["part_accuracy"])
            for m in GROUPING_METHODS]  # each method at its best val setting, for comparison
    test = {key: score(test_images, seg.object_classes, *key) for key in dict.fromkeys([default, chosen, *best])}
    command = "python3 training/objects_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = section(args, seg, sweep, chosen, test, counts, command, time.perf_counter() - started)
    write_marked_section(Path(args.out), text, OBJECTS_BEGIN, OBJECTS_END)
    if args.json:
        atomic_write_text(args.json, json.dumps(to_jsonable({
            "val": {setting_name(*k): v for k, v in sweep.items()}, "chosen_on_val": setting_name(*chosen),
            "test": {setting_name(*k): v for k, v in test.items()}}), indent=2) + "\n")
    print(f"chosen on {args.val}: {setting_name(*chosen)}; shipped default: {setting_name(*default)}; wrote {args.out}")
    if chosen != default:
        print("the val choice differs from the shipped default: update postprocess/objects.py's DEFAULT_* constants")
    return 0


if __name__ == "__main__":
    sys.exit(main())
