"""Part-segmentation metrics over semantic label maps, under two clearly separated protocols.

Label maps are H x W integer arrays: 0 = background, k = part class k (1..C); pixels whose
ground truth equals `ignore_index` (default 255) are dropped from every count, whatever was
predicted there. All values returned are fractions in [0, 1]; report.py renders percentages.

Paper protocol (`paper_*` keys) -- the per-image, per-present-class average used by WPS-SAM
(Wu et al., ECCV 2024, 68.93 mIoU / 79.53 mACC on PartImageNet):
    for every pair (image i, part class k >= 1 with gt_i == k somewhere):
        IoU_ik = |pred_i==k AND gt_i==k| / |pred_i==k OR gt_i==k|
        Acc_ik = |pred_i==k AND gt_i==k| / |gt_i==k|          (recall of class k in image i)
    paper_mIoU = mean of IoU_ik over all pairs, paper_mAcc = mean of Acc_ik over all pairs.
    Background is never a pair. A class absent from an image's GT makes no pair, so false
    positives of absent classes cost nothing (they do shrink IoU of a present class whose
    pixels they steal). Every pair weighs the same, so frequent classes dominate.

Standard dataset-level protocol (unprefixed keys) -- one (C+1) x (C+1) confusion matrix
(rows = GT, cols = prediction, background row/col 0 included) summed over the dataset:
    IoU_k = TP / (TP + FP + FN),  Acc_k = TP / (TP + FN),  pixel_acc = trace / total.
    mIoU / mAcc           = mean over part classes 1..C that occur in the GT (background excluded);
    mIoU_with_background  = the same means over classes 0..C that occur in the GT.
    Decision for a class never in the GT: if never predicted either, IoU = Acc = NaN; if it was
    predicted, its per-class IoU is 0 (Acc NaN) -- shown in the per-class table and counted in
    `classes_predicted_not_in_gt` -- but it is EXCLUDED from the means, which therefore always
    average exactly the GT-present classes. (MMSegmentation would include such a 0 in mIoU; on a
    full evaluation set every class is in the GT, where both conventions agree.)

`SegmentationMetrics` accumulates both at once from one np.bincount per image. Its state is a
few plain arrays of sums, so accumulators merge exactly (`merge`, or `state_vector` summed by
an all-reduce across DDP ranks and loaded back with `from_state_vector`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import WpsSamError

BACKGROUND_NAME = "background"
DEFAULT_IGNORE_INDEX = 255


class SegmentationMetrics:
    """Accumulator for both protocols over `num_classes` part classes (+ background 0)."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise WpsSamError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is None:
            class_names = [f"class_{k}" for k in range(1, num_classes + 1)]
        if len(class_names) != num_classes:
            raise WpsSamError(f"class_names has {len(class_names)} names for num_classes={num_classes}")
        if ignore_index is not None and 0 <= ignore_index <= num_classes:
            raise WpsSamError(f"ignore_index {ignore_index} collides with a class id in 0..{num_classes}")
        self.num_classes = num_classes
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        n = num_classes + 1
        self.confusion = np.zeros((n, n), dtype=np.int64)  # rows = GT, cols = prediction
        # Paper protocol sums, per class (index 0 unused: background is never a pair).
        self.paper_iou_sum = np.zeros(n, dtype=np.float64)
        self.paper_acc_sum = np.zeros(n, dtype=np.float64)
        self.paper_pairs = np.zeros(n, dtype=np.int64)
        self.num_images = 0

    # ------------------------------------------------------------------ accumulation
    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one H x W image, or a batch N x H x W (each slice is one image for the paper protocol)."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise WpsSamError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
        if gt.ndim == 2:
            self._update_image(pred, gt)
        elif gt.ndim == 3:
            for pred_i, gt_i in zip(pred, gt):
                self._update_image(pred_i, gt_i)
        else:
            raise WpsSamError(f"label maps must be H x W or N x H x W, got shape {gt.shape}")

    def _update_image(self, pred: np.ndarray, gt: np.ndarray) -> None:
        for name, arr in (("prediction", pred), ("ground truth", gt)):
            if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
                raise WpsSamError(f"{name} label map must be integer, got dtype {arr.dtype}")
        n = self.num_classes + 1
        gt = gt.astype(np.int64, copy=False).ravel()
        pred = pred.astype(np.int64, copy=False).ravel()
        if self.ignore_index is not None:
            valid = gt != self.ignore_index
            gt, pred = gt[valid], pred[valid]
        for name, arr in (("prediction", pred), ("ground truth", gt)):
            if arr.size and (arr.min() < 0 or arr.max() >= n):
                bad = int(arr[(arr < 0) | (arr >= n)][0])
                raise WpsSamError(f"{name} label map holds value {bad}, outside 0..{self.num_classes}"
                                  f" (ignore_index={self.ignore_index})")
        image_confusion = np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)
        self.confusion += image_confusion
        self.num_images += 1

        tp = np.diag(image_confusion)[1:]
        gt_count = image_confusion.sum(axis=1)[1:]
        pred_count = image_confusion.sum(axis=0)[1:]
        present = gt_count > 0  # the image's (image, class) pairs
        union = gt_count + pred_count - tp
        self.paper_iou_sum[1:][present] += tp[present] / union[present]
        self.paper_acc_sum[1:][present] += tp[present] / gt_count[present]
        self.paper_pairs[1:] += present

    # ------------------------------------------------------------------ merging (DDP)
    def _check_same_setup(self, other: SegmentationMetrics) -> None:
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise WpsSamError(
                f"cannot merge metrics for {other.num_classes} classes / ignore {other.ignore_index} into "
                f"{self.num_classes} classes / ignore {self.ignore_index}")

    def merge(self, other: SegmentationMetrics) -> SegmentationMetrics:
        """Add `other`'s images into self (exact: all state is sums). Returns self."""
        self._check_same_setup(other)
        self.confusion += other.confusion
        self.paper_iou_sum += other.paper_iou_sum
        self.paper_acc_sum += other.paper_acc_sum
        self.paper_pairs += other.paper_pairs
        self.num_images += other.num_images
        return self

    def state_vector(self) -> np.ndarray:
        """All state as one float64 vector; summing vectors (e.g. torch all_reduce SUM) merges.

        Counts stay exact in float64 up to 2**53 pixels per confusion cell.
        """
        return np.concatenate([
            self.confusion.ravel().astype(np.float64), self.paper_iou_sum, self.paper_acc_sum,
            self.paper_pairs.astype(np.float64), np.array([self.num_images], dtype=np.float64)])

    def load_state_vector(self, vector: np.ndarray) -> SegmentationMetrics:
        """Replace the state with one produced by `state_vector` (possibly summed over ranks)."""
        n = self.num_classes + 1
        vector = np.asarray(vector, dtype=np.float64).ravel()
        if vector.size != n * n + 3 * n + 1:
            raise WpsSamError(f"state vector has {vector.size} values, {n * n + 3 * n + 1} expected "
                              f"for {self.num_classes} classes")
        parts = np.split(vector, np.cumsum([n * n, n, n, n]))
        self.confusion = np.rint(parts[0]).astype(np.int64).reshape(n, n)
        self.paper_iou_sum = parts[1].copy()
        self.paper_acc_sum = parts[2].copy()
        self.paper_pairs = np.rint(parts[3]).astype(np.int64)
        self.num_images = round(parts[4][0])
        return self

    @classmethod
    def from_state_vector(cls, vector: np.ndarray, num_classes: int, class_names: Sequence[str] | None = None,
                          ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> SegmentationMetrics:
        return cls(num_classes, class_names, ignore_index).load_state_vector(vector)

    # ------------------------------------------------------------------ results
    def per_class(self) -> list[dict[str, Any]]:
        """One row per class id 0..C (row 0 = background; its paper values are NaN by definition)."""
        c = self.confusion
        tp = np.diag(c).astype(np.float64)
        gt_pixels, pred_pixels = c.sum(axis=1), c.sum(axis=0)
        union = gt_pixels + pred_pixels - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt_pixels > 0, tp / gt_pixels, np.nan)
            paper_iou = np.where(self.paper_pairs > 0, self.paper_iou_sum / self.paper_pairs, np.nan)
            paper_acc = np.where(self.paper_pairs > 0, self.paper_acc_sum / self.paper_pairs, np.nan)
        names = [BACKGROUND_NAME] + self.class_names
        return [{
            "class_id": k, "name": names[k],
            "IoU": float(iou[k]), "Acc": float(acc[k]),
            "paper_IoU": float(paper_iou[k]), "paper_Acc": float(paper_acc[k]),
            "paper_images": int(self.paper_pairs[k]),
            "gt_pixels": int(gt_pixels[k]), "pred_pixels": int(pred_pixels[k]),
        } for k in range(self.num_classes + 1)]

    def compute(self) -> dict[str, Any]:
        """Summary scalars of both protocols plus the `per_class` rows (see module docstring)."""
        rows = self.per_class()
        in_gt = [r for r in rows if r["gt_pixels"] > 0]
        parts_in_gt = [r for r in in_gt if r["class_id"] > 0]
        total = int(self.confusion.sum())
        pairs = int(self.paper_pairs.sum())
        return {
            # paper protocol: mean over (image, GT-present part class) pairs
            "paper_mIoU": float(self.paper_iou_sum.sum() / pairs) if pairs else math.nan,
            "paper_mAcc": float(self.paper_acc_sum.sum() / pairs) if pairs else math.nan,
            "paper_pairs": pairs,
            # standard dataset-level protocol
            "mIoU": _mean([r["IoU"] for r in parts_in_gt]),
            "mAcc": _mean([r["Acc"] for r in parts_in_gt]),
            "mIoU_with_background": _mean([r["IoU"] for r in in_gt]),
            "mAcc_with_background": _mean([r["Acc"] for r in in_gt]),
            "pixel_acc": float(np.trace(self.confusion) / total) if total else math.nan,
            "classes_in_gt": len(parts_in_gt),
            "classes_predicted_not_in_gt": sum(1 for r in rows[1:] if r["gt_pixels"] == 0 and r["pred_pixels"] > 0),
            "num_images": self.num_images,
            "num_pixels": total,
            "per_class": rows,
        }


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan
