"""Part-to-object assignment accuracy: are the predicted parts grouped into the objects they belong to?

Ground truth: the object instance of every GT part (the procedural world writes `object_id` on each part
annotation, data/world.py). Per image, predicted parts (the painted instances a robot receives, each with
its `object_id`) are matched to GT parts one to one: same class and mask IoU > 0.5 (unique, as in PQ).
Over the MATCHED parts only (detection is scored by the instance metrics, not here):

- pairs: every unordered pair of matched parts of one image is a positive in the GT when both GT parts
  belong to one GT object, and in the prediction when both predictions carry one object id.
  pair precision = TP / (TP + FP), pair recall = TP / (TP + FN), pair F1, pooled over the dataset
  (pairs of parts that are alone in their object count nothing);
- part accuracy: the fraction of matched parts whose predicted object holds exactly the matched parts of
  its GT object (among matched parts: "grouped with exactly the parts whose GT object is the same");
- objects recovered: the fraction of GT objects all of whose parts are matched AND one predicted object
  consists of exactly their predictions (no other prediction, matched or not); also among the GT objects
  whose parts were all matched ("given detected"), which isolates the grouping from detection.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import WpsSamError
from .instances import MATCH_IOU, iou_from_overlaps, pairwise_overlaps  # PQ's matching rule

# compute() keys, in table order (the report's columns)
SUMMARY_KEYS = ("part_accuracy", "pair_precision", "pair_recall", "pair_f1", "objects_exact",
                "objects_exact_given_detected")


def gt_object_ids(annotation_file: str | Path) -> dict[int, int] | None:
    """{part annotation id: GT object id} of a COCO part file whose annotations all carry `object_id`
    (the world's); None when any lacks one (then there is nothing to score)."""
    data = json.loads(Path(annotation_file).read_text(encoding="utf-8"))
    out = {}
    for ann in data.get("annotations", []):
        if not isinstance(ann, dict) or not isinstance(ann.get("object_id"), int):
            return None
        out[ann["id"]] = ann["object_id"]
    return out or None


def match_parts(gt_masks: np.ndarray, gt_classes: Sequence[int], pred_masks: np.ndarray,
                pred_classes: Sequence[int]) -> list[tuple[int, int]]:
    """(gt index, pred index) pairs: same class, IoU > 0.5 (at most one partner each: IoU > 0.5 is unique
    when the masks of one side do not overlap; otherwise the best IoU wins, greedily)."""
    if len(gt_masks) == 0 or len(pred_masks) == 0:
        return []
    iou = iou_from_overlaps(*pairwise_overlaps(np.asarray(gt_masks, bool), np.asarray(pred_masks, bool)))  # G x P
    iou *= np.asarray(gt_classes)[:, None] == np.asarray(pred_classes)[None, :]
    pairs, used_g, used_p = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        gi, pi = divmod(int(flat), iou.shape[1])
        if iou[gi, pi] <= MATCH_IOU:
            break
        if gi not in used_g and pi not in used_p:
            pairs.append((gi, pi))
            used_g.add(gi)
            used_p.add(pi)
    return sorted(pairs)


@dataclass
class ObjectMetrics:
    """Accumulates the part-to-object scores over images (`add`), `compute` gives the numbers."""

    pair_tp: int = 0
    pair_fp: int = 0
    pair_fn: int = 0
    gt_parts: int = 0
    pred_parts: int = 0
    matched_parts: int = 0
    parts_correct: int = 0
    gt_objects: int = 0
    gt_objects_detected: int = 0
    objects_exact: int = 0
    images: int = 0

    def add(self, gt_masks: np.ndarray, gt_classes: Sequence[int], gt_objects: Sequence[int], pred_masks: np.ndarray,
            pred_classes: Sequence[int], pred_objects: Sequence[int]) -> None:
        """One image: GT parts (N x H x W masks, classes, object ids) and predicted parts (M x H x W, classes,
        object ids; object id 0 counts as a part alone)."""
        if not (len(gt_masks) == len(gt_classes) == len(gt_objects)):
            raise WpsSamError(f"{len(gt_masks)} GT masks, {len(gt_classes)} classes, {len(gt_objects)} object ids")
        if not (len(pred_masks) == len(pred_classes) == len(pred_objects)):
            raise WpsSamError(f"{len(pred_masks)} predicted masks, {len(pred_classes)} classes, "
                              f"{len(pred_objects)} object ids")
        pairs = match_parts(gt_masks, gt_classes, pred_masks, pred_classes)
        pred_key = [o if o else -1 - i for i, o in enumerate(pred_objects)]  # 0: alone
        self.images += 1
        self.gt_parts += len(gt_masks)
        self.pred_parts += len(pred_masks)
        self.matched_parts += len(pairs)
        for (ga, pa), (gb, pb) in combinations(pairs, 2):
            same_gt, same_pred = gt_objects[ga] == gt_objects[gb], pred_key[pa] == pred_key[pb]
            self.pair_tp += same_gt and same_pred
            self.pair_fp += same_pred and not same_gt
            self.pair_fn += same_gt and not same_pred
        for ga, pa in pairs:
            gt_group = {p for g, p in pairs if gt_objects[g] == gt_objects[ga]}
            pred_group = {p for _, p in pairs if pred_key[p] == pred_key[pa]}
            self.parts_correct += gt_group == pred_group
        pred_of = dict(pairs)
        for obj in set(gt_objects):
            members = [g for g in range(len(gt_objects)) if gt_objects[g] == obj]
            self.gt_objects += 1
            if not all(g in pred_of for g in members):
                continue
            self.gt_objects_detected += 1
            preds = {pred_of[g] for g in members}
            whole = {p for p in range(len(pred_key)) if pred_key[p] == pred_key[next(iter(preds))]}
            self.objects_exact += whole == preds

    def compute(self) -> dict[str, Any]:
        """Fractions (NaN where undefined: no matched parts, no positive pairs) and the counts behind them."""
        def ratio(a: int, b: int) -> float:
            return a / b if b else math.nan

        precision = ratio(self.pair_tp, self.pair_tp + self.pair_fp)
        recall = ratio(self.pair_tp, self.pair_tp + self.pair_fn)
        f1 = ratio(2 * self.pair_tp, 2 * self.pair_tp + self.pair_fp + self.pair_fn)
        return {
            "part_accuracy": ratio(self.parts_correct, self.matched_parts), "pair_precision": precision,
            "pair_recall": recall, "pair_f1": f1, "objects_exact": ratio(self.objects_exact, self.gt_objects),
            "objects_exact_given_detected": ratio(self.objects_exact, self.gt_objects_detected),
            "pair_tp": self.pair_tp, "pair_fp": self.pair_fp, "pair_fn": self.pair_fn,
            "gt_parts": self.gt_parts, "pred_parts": self.pred_parts, "matched_parts": self.matched_parts,
            "gt_objects": self.gt_objects, "gt_objects_detected": self.gt_objects_detected, "images": self.images,
        }
