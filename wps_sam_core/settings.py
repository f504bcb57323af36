"""SegmenterSettings: the run-time knobs of PartSegmenter (any backend), validated and swapped whole."""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Sequence

import numpy as np

from .errors import WpsSamError

# Where part masks overlap, which one keeps the pixel. Parts nest (a window inside a car body, a cap
# on a bottle): painting smaller masks over larger ones keeps the nested part visible, whereas
# "score" lets a confident body mask swallow its windows. Ties fall back to the score.
OVERLAP_ORDERS = ("smaller_on_top", "score")
# Duplicate suppression (postprocess/dedup.py), chosen by PQ on the world's val split (docs/results.md,
# training/dedup_table.py): the method ("merge": same-class masks linked by IoU > dedup_iou, also through
# each other, become the best-scored one holding their union) and the default dedup_iou.
DEDUP_METHOD = "merge"
DEFAULT_DEDUP_IOU = 0.35


@dataclass(frozen=True)
class SegmenterSettings:
    """Run-time knobs; immutable, swapped whole so a concurrent frame sees one consistent set."""

    score_threshold: float = 0.5
    mask_threshold: float = 0.0
    max_instances: int = 25
    class_filter: tuple[str, ...] = ()  # class names to keep; empty = all
    overlap: str = OVERLAP_ORDERS[0]  # see OVERLAP_ORDERS
    # same-class masks overlapping more than this (mask IoU) are one part: merged into the best-scored
    # one before painting (postprocess/dedup.py, method DEDUP_METHOD); 0 = off
    dedup_iou: float = DEFAULT_DEDUP_IOU

    def validated(self, class_names: Sequence[str]) -> "SegmenterSettings":
        for name, kind in (("score_threshold", Real), ("mask_threshold", Real), ("max_instances", Integral),
                           ("dedup_iou", Real)):
            value = getattr(self, name)  # a str, bool or 2.5 would otherwise fail far away, mid-frame
            if isinstance(value, bool) or not isinstance(value, kind):
                raise WpsSamError(f"{name} must be {'an integer' if kind is Integral else 'a number'}, got {value!r}")
        if self.overlap not in OVERLAP_ORDERS:
            raise WpsSamError(f"overlap must be one of {list(OVERLAP_ORDERS)}, got {self.overlap!r}")
        if not all(isinstance(n, str) for n in self.class_filter):
            raise WpsSamError(f"class_filter must be class names, got {self.class_filter!r}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise WpsSamError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0.0 <= self.dedup_iou <= 1.0:  # also refuses NaN
            raise WpsSamError(f"dedup_iou must be in [0, 1] (0 = off), got {self.dedup_iou}")
        if not np.isfinite(self.mask_threshold):
            raise WpsSamError(f"mask_threshold must be finite, got {self.mask_threshold}")
        if not 1 <= self.max_instances <= 65535:
            raise WpsSamError(f"max_instances must be in [1, 65535], got {self.max_instances}")
        unknown = sorted(set(self.class_filter) - set(class_names))
        if unknown:
            raise WpsSamError(f"class_filter names unknown classes {unknown}; known: {list(class_names)}")
        return self
