"""Instance metrics for part instances: panoptic quality, COCO mask AP and duplicates per GT.

The semantic metrics (metrics.py) cannot see duplicates: four overlapping `hammer_head` masks on
one hammer head paint the same label map as one. These metrics score the instance list itself.

Inputs per image: GT instances (G x H x W bool masks, classes 1..C) and predicted instances
(P x H x W bool masks, classes 1..C, scores). Masks may overlap. Class ids follow the label-map
convention (0 = background, k = class_names[k - 1]); instances never match across classes.

Panoptic quality (Kirillov et al., CVPR 2019), per class c over the whole dataset:
    a (prediction, GT) pair of class c is a match candidate when IoU > 0.5. Candidates are
    matched one-to-one, greedily by descending IoU (ties: higher score, then lower GT index,
    then lower prediction index). With non-overlapping GT masks a prediction has IoU > 0.5 with
    at most one GT, and the greedy match gives each GT its best prediction, so this is the
    matching of the paper; extra predictions on a matched GT (duplicates) are false positives.
    TP = matched pairs, FP = unmatched predictions, FN = unmatched GT instances,
    SQ_c = sum of matched IoUs / TP (0 when TP = 0),  RQ_c = TP / (TP + FP/2 + FN/2),
    PQ_c = SQ_c * RQ_c = sum of matched IoUs / (TP + FP/2 + FN/2).
    pq / sq / rq = the means of PQ_c / SQ_c / RQ_c over the classes with TP + FP + FN > 0
    (panopticapi's convention: a class predicted but never in the GT counts, with PQ_c = 0).
    Example: one GT, two predictions on it -> TP 1, FP 1, FN 0, RQ = 1 / 1.5 = 2/3.

Mask AP: pycocotools' COCOeval (iouType "segm", its default parameters: IoU thresholds
0.50:0.05:0.95, all areas, at most 100 detections per image) on the same instances, built in
memory as compressed RLE. ap / ap50 / ap75 = COCOeval stats[0..2]; per-class AP is the mean of
COCOeval's precision over IoU thresholds and recall points for that category.

Duplicates (the issue's "predicted instances per matched GT instance"):
    for a GT instance g of class c, d(g) = number of predictions of class c with IoU(p, g) > 0.5;
    duplicates_per_gt = mean of d(g) over the GT instances with d(g) >= 1 (the matched ones).
    1.0 means no duplicates; two predictions on one GT give 2.0.
    Measure it on the segmenter's raw (overlapping) masks: after painting into a non-overlapping
    instance map, two disjoint masks cannot both have IoU > 0.5 with one GT, so d(g) <= 1 there.
fragments_per_gt: the same with "most of the prediction lies on g" (|p AND g| / |p| > 0.5)
    instead of IoU > 0.5, averaged over the GT instances with at least one such prediction. It
    also counts the pieces a duplicate leaves in a painted instance map.

Undefined values (no GT, no matched GT, ...) are NaN, as in metrics.py; report.to_jsonable turns
them into null. All other values are plain Python numbers, so `compute()` is JSON-ready.
"""
from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import WpsSamError

MATCH_IOU = 0.5  # PQ / duplicate matching threshold (strict: IoU > 0.5)


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """N x H x W bool masks -> compressed COCO RLEs (pycocotools wants H x W x N Fortran uint8)."""
    if len(masks) == 0:
        return []
    return mask_utils.encode(np.asfortranarray(np.moveaxis(masks, 0, -1).astype(np.uint8)))


def pairwise_overlaps(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P x H x W and G x H x W bool masks -> (P x G intersections, P areas, G areas), exact counts.

    One float matmul over the flattened masks; float32 holds pixel counts exactly up to 2**24.
    """
    pixels = pred.shape[1] * pred.shape[2]
    dtype = np.float32 if pixels <= 2 ** 24 else np.float64
    p = pred.reshape(len(pred), pixels).astype(dtype)
    g = gt.reshape(len(gt), pixels).astype(dtype)
    inter = np.rint(p @ g.T).astype(np.int64)
    return inter, np.rint(p.sum(1)).astype(np.int64), np.rint(g.sum(1)).astype(np.int64)


def iou_from_overlaps(inter: np.ndarray, pred_area: np.ndarray, gt_area: np.ndarray) -> np.ndarray:
    """P x G IoU from exact counts (0 where both masks are empty)."""
    union = pred_area[:, None] + gt_area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def greedy_match(iou: np.ndarray, scores: np.ndarray, threshold: float = MATCH_IOU) -> list[tuple[int, int]]:
    """One-to-one (pred, gt) pairs with IoU > threshold, by descending IoU (see module docstring for ties)."""
    p_idx, g_idx = np.nonzero(iou > threshold)
    order = np.lexsort((p_idx, g_idx, -scores[p_idx], -iou[p_idx, g_idx]))
    used_p, used_g, pairs = set(), set(), []
    for k in order:
        p, g = int(p_idx[k]), int(g_idx[k])
        if p not in used_p and g not in used_g:
            used_p.add(p)
            used_g.add(g)
            pairs.append((p, g))
    return pairs


class InstanceMetrics:
    """Accumulates PQ counts, duplicate counts and the RLEs for COCO AP over a dataset.

    `class_names[k - 1]` names class id k. `iou_threshold` (0.5, strict) is the PQ / duplicate /
    fragment threshold; COCO AP always uses COCOeval's own thresholds. Image ids: any hashable, once each.
    """

    def __init__(self, class_names: Sequence[str], iou_threshold: float = MATCH_IOU) -> None:
        if not class_names:
            raise WpsSamError("InstanceMetrics needs at least one class name")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.iou_threshold = float(iou_threshold)
        n = self.num_classes + 1  # index 0 unused (background)
        self.tp = np.zeros(n, dtype=np.int64)
        self.fp = np.zeros(n, dtype=np.int64)
        self.fn = np.zeros(n, dtype=np.int64)
        self.iou_sum = np.zeros(n, dtype=np.float64)
        self.dup_counts: list[int] = []    # d(g) for every GT with d(g) >= 1
        self.frag_counts: list[int] = []   # the same for the fragments rule
        self.images: list[dict[str, Any]] = []  # COCO image entries
        self.gt_anns: list[dict[str, Any]] = []
        self.dt_anns: list[dict[str, Any]] = []
        self._image_ids: dict[Hashable, int] = {}

    # ------------------------------------------------------------------ accumulation
    def add(self, image_id: Hashable, gt_masks: np.ndarray, gt_classes: np.ndarray, pred_masks: np.ndarray,
            pred_classes: np.ndarray, pred_scores: np.ndarray) -> None:
        """Add one image: G x H x W / P x H x W bool masks, classes 1..C, P scores."""
        gt_masks, pred_masks, gt_classes, pred_classes, pred_scores = self._check(
            image_id, gt_masks, gt_classes, pred_masks, pred_classes, pred_scores)
        coco_id = len(self.images) + 1  # COCO ids must be > 0
        self._image_ids[image_id] = coco_id
        h, w = gt_masks.shape[1:]
        self.images.append({"id": coco_id, "height": int(h), "width": int(w)})
        self._add_coco(coco_id, gt_masks, gt_classes, pred_masks, pred_classes, pred_scores)
        inter, pred_area, gt_area = pairwise_overlaps(pred_masks, gt_masks)
        iou = iou_from_overlaps(inter, pred_area, gt_area)
        with np.errstate(divide="ignore", invalid="ignore"):
            on_gt = inter / np.maximum(pred_area, 1)[:, None]  # intersection over prediction
        for c in sorted(set(gt_classes.tolist()) | set(pred_classes.tolist())):
            p, g = np.nonzero(pred_classes == c)[0], np.nonzero(gt_classes == c)[0]
            self._add_class(c, iou[np.ix_(p, g)], on_gt[np.ix_(p, g)], pred_scores[p])

    def _add_class(self, c: int, iou: np.ndarray, on_gt: np.ndarray, scores: np.ndarray) -> None:
        """PQ counts and duplicate counts of class c in one image (P_c x G_c matrices)."""
        pairs = greedy_match(iou, scores, self.iou_threshold)
        num_pred, num_gt = iou.shape
        self.tp[c] += len(pairs)
        self.fp[c] += num_pred - len(pairs)
        self.fn[c] += num_gt - len(pairs)
        self.iou_sum[c] += float(sum(iou[p, g] for p, g in pairs))
        dups = (iou > self.iou_threshold).sum(0)
        frags = (on_gt > self.iou_threshold).sum(0)
        self.dup_counts.extend(int(d) for d in dups if d > 0)
        self.frag_counts.extend(int(f) for f in frags if f > 0)

    def _add_coco(self, coco_id: int, gt_masks, gt_classes, pred_masks, pred_classes, pred_scores) -> None:
        for rle, c in zip(encode_masks(gt_masks), gt_classes):
            self.gt_anns.append({"id": len(self.gt_anns) + 1, "image_id": coco_id, "category_id": int(c),
                                 "segmentation": rle, "area": float(mask_utils.area(rle)),
                                 "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0})
        for rle, c, s in zip(encode_masks(pred_masks), pred_classes, pred_scores):
            self.dt_anns.append({"image_id": coco_id, "category_id": int(c), "segmentation": rle,
                                 "score": float(s)})

    def _check(self, image_id, gt_masks, gt_classes, pred_masks, pred_classes, pred_scores):
        if image_id in self._image_ids:
            raise WpsSamError(f"image {image_id!r} was already added to the instance metrics")
        gt_masks, pred_masks = np.asarray(gt_masks, dtype=bool), np.asarray(pred_masks, dtype=bool)
        if pred_masks.size == 0 and gt_masks.ndim == 3:  # no prediction: accept [] or any empty shape
            pred_masks = pred_masks.reshape(0, *gt_masks.shape[1:])
        if gt_masks.size == 0 and pred_masks.ndim == 3:
            gt_masks = gt_masks.reshape(0, *pred_masks.shape[1:])
        gt_classes = np.asarray(gt_classes, dtype=np.int64).reshape(-1)
        pred_classes = np.asarray(pred_classes, dtype=np.int64).reshape(-1)
        pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if gt_masks.ndim != 3 or pred_masks.ndim != 3 or gt_masks.shape[1:] != pred_masks.shape[1:]:
            raise WpsSamError(f"image {image_id!r}: masks must be N x H x W of one size, got GT {gt_masks.shape}"
                              f" and predictions {pred_masks.shape}")
        if len(gt_classes) != len(gt_masks) or not len(pred_classes) == len(pred_scores) == len(pred_masks):
            raise WpsSamError(f"image {image_id!r}: {len(gt_masks)} GT masks / {len(gt_classes)} classes, "
                              f"{len(pred_masks)} predicted masks / {len(pred_classes)} classes / "
                              f"{len(pred_scores)} scores")
        for name, classes in (("GT", gt_classes), ("predicted", pred_classes)):
            if classes.size and (classes.min() < 1 or classes.max() > self.num_classes):
                raise WpsSamError(f"image {image_id!r}: {name} class ids must be in 1..{self.num_classes},"
                                  f" got {classes.min()}..{classes.max()}")
        return gt_masks, pred_masks, gt_classes, pred_classes, pred_scores

    def merge(self, other: InstanceMetrics) -> InstanceMetrics:
        """Add `other`'s images into self (image ids must not repeat). Returns self."""
        if other.class_names != self.class_names or other.iou_threshold != self.iou_threshold:
            raise WpsSamError("cannot merge instance metrics of other classes or another IoU threshold")
        if set(other._image_ids) & set(self._image_ids):
            raise WpsSamError("cannot merge instance metrics that share image ids")
        for arr in ("tp", "fp", "fn", "iou_sum"):
            getattr(self, arr)[:] += getattr(other, arr)
        self.dup_counts += other.dup_counts
        self.frag_counts += other.frag_counts
        offset, ann_offset = len(self.images), len(self.gt_anns)
        self.images += [{**im, "id": im["id"] + offset} for im in other.images]
        self.gt_anns += [{**a, "id": a["id"] + ann_offset, "image_id": a["image_id"] + offset} for a in other.gt_anns]
        self.dt_anns += [{**a, "image_id": a["image_id"] + offset} for a in other.dt_anns]
        self._image_ids.update({k: v + offset for k, v in other._image_ids.items()})
        return self

    # ------------------------------------------------------------------ results
    def per_class(self, coco_eval: Any = None) -> list[dict[str, Any]]:
        """One row per part class 1..C: PQ / SQ / RQ, counts, AP and AP50 (NaN where undefined).

        `coco_eval`: a finished COCOeval of these instances (compute() passes its own), else one is run.
        """
        ap, ap50 = self._coco_per_class(coco_eval if coco_eval is not None else self._run_cocoeval())
        rows = []
        for c in range(1, self.num_classes + 1):
            tp, fp, fn = int(self.tp[c]), int(self.fp[c]), int(self.fn[c])
            denom = tp + 0.5 * fp + 0.5 * fn
            sq = self.iou_sum[c] / tp if tp else 0.0
            rq = tp / denom if denom else math.nan
            rows.append({
                "class_id": c, "name": self.class_names[c - 1],
                "PQ": float(self.iou_sum[c] / denom) if denom else math.nan,
                "SQ": float(sq) if denom else math.nan, "RQ": float(rq),
                "TP": tp, "FP": fp, "FN": fn, "AP": ap[c - 1], "AP50": ap50[c - 1],
            })
        return rows

    def compute(self) -> dict[str, Any]:
        """Summary scalars plus `per_class` rows (see the module docstring for every definition)."""
        coco_eval = self._run_cocoeval()
        rows = self.per_class(coco_eval)
        counted = [r for r in rows if r["TP"] + r["FP"] + r["FN"] > 0]
        stats = self._coco_stats(coco_eval)
        return {
            "pq": _mean([r["PQ"] for r in counted]),
            "sq": _mean([r["SQ"] for r in counted]),
            "rq": _mean([r["RQ"] for r in counted]),
            "ap": stats[0], "ap50": stats[1], "ap75": stats[2],
            "duplicates_per_gt": _mean(self.dup_counts),
            "fragments_per_gt": _mean(self.frag_counts),
            "matched_gt": len(self.dup_counts),
            "tp": int(self.tp.sum()), "fp": int(self.fp.sum()), "fn": int(self.fn.sum()),
            "classes_counted": len(counted),
            "num_images": len(self.images), "num_gt": len(self.gt_anns), "num_pred": len(self.dt_anns),
            "iou_threshold": self.iou_threshold,
            "per_class": rows,
        }

    # ------------------------------------------------------------------ COCO AP
    def _run_cocoeval(self):
        """A finished COCOeval, or None when there is no GT instance (AP undefined) or no detection."""
        if not self.gt_anns or not self.dt_anns:
            return None
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        categories = [{"id": c, "name": n} for c, n in enumerate(self.class_names, start=1)]
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # NumPy 2 vs pycocotools' compiled code
            gt = COCO()
            gt.dataset = {"images": self.images, "annotations": self.gt_anns, "categories": categories}
            gt.createIndex()
            dt = gt.loadRes([dict(a) for a in self.dt_anns])
            ev = COCOeval(gt, dt, iouType="segm")
            ev.params.imgIds = [im["id"] for im in self.images]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return ev

    def _coco_stats(self, ev: Any) -> list[float]:
        if not self.gt_anns:
            return [math.nan] * 3
        if ev is None:
            return [0.0] * 3  # GT but no detection at all: nothing is recalled
        return [float(v) if v >= 0 else math.nan for v in ev.stats[:3]]

    def _coco_per_class(self, ev: Any) -> tuple[list[float], list[float]]:
        gt_classes = {a["category_id"] for a in self.gt_anns}
        ap, ap50 = [], []
        for c in range(1, self.num_classes + 1):
            if c not in gt_classes:
                ap.append(math.nan)
                ap50.append(math.nan)
            elif ev is None:
                ap.append(0.0)
                ap50.append(0.0)
            else:
                precision = ev.eval["precision"][:, :, c - 1, 0, -1]  # T x R, all areas, 100 dets
                ap.append(_mean_valid(precision))
                ap50.append(_mean_valid(precision[0]))
        return ap, ap50


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _mean_valid(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else math.nan
