"""Weak supervision derived from part annotations: a box or a single point per instance.

WPS-SAM is trained from boxes / points only. Here each annotated instance becomes what an
annotator would have given: its box, or one click. Two click rules:
  * "center"   — the box centre (as in the reference code); it can fall OUTSIDE a concave
                 part (a U-shaped handle), which teaches SAM a prompt on the wrong region;
  * "interior" — a pixel deep inside the mask: the maximum of the distance transform, or
                 (interior_fraction > 0) a seeded random pick among pixels whose distance to
                 the boundary is >= interior_fraction * that maximum.
Reading the mask to place a click is like an annotator looking at the part; the mask itself
never reaches the loss. "mixed" picks box or point per instance at random (seeded).

Everything is deterministic given the seed, and independent of dataset order or worker:
each instance draws from its own generator seeded by (seed, image_id, annotation_id).
Coordinates are in original image pixels, continuous: pixel (col, row) covers
[col, col+1) x [row, row+1), so boxes are xyxy edges and a pixel's point is (col+0.5, row+0.5).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

from ..errors import WpsSamError
from .coco import CocoPartDataset, PartInstances, decode_rles

log = logging.getLogger(__name__)

SUPERVISIONS = ("box", "point", "mixed")
POINT_MODES = ("center", "interior")
BOX, POINT = "box", "point"


@dataclass(frozen=True)
class WeakLabelConfig:
    supervision: str = "box"         # one of SUPERVISIONS
    point_mode: str = "center"       # one of POINT_MODES
    box_probability: float = 0.5     # "mixed": chance that an instance is supervised by its box
    interior_fraction: float = 0.0   # "interior": 0 = deepest pixel; f in (0, 1] = random pixel with depth >= f*max
    seed: int = 0

    def __post_init__(self) -> None:
        if self.supervision not in SUPERVISIONS:
            raise WpsSamError(f"weak supervision must be one of {SUPERVISIONS}, got {self.supervision!r}")
        if self.point_mode not in POINT_MODES:
            raise WpsSamError(f"point mode must be one of {POINT_MODES}, got {self.point_mode!r}")
        if not 0.0 <= self.box_probability <= 1.0:
            raise WpsSamError(f"box_probability must be in [0, 1], got {self.box_probability}")
        if not 0.0 <= self.interior_fraction <= 1.0:
            raise WpsSamError(f"interior_fraction must be in [0, 1], got {self.interior_fraction}")


@dataclass(frozen=True, eq=False)
class WeakLabels:
    """Weak labels of one image, one row per instance (annotation order).

    Exactly one of boxes[i] / points[i] is set (the other is NaN), matching kinds[i], so a
    point-supervised instance cannot leak its box into training by accident.
    """

    image_id: int
    annotation_ids: np.ndarray  # (N,) int64
    class_indices: np.ndarray   # (N,) int64, 0-based (model class id = index + 1)
    kinds: tuple[str, ...]      # (N,) 'box' | 'point'
    boxes: np.ndarray           # (N, 4) float32 xyxy; NaN rows for point instances
    points: np.ndarray          # (N, 2) float32 (x, y); NaN rows for box instances

    def __len__(self) -> int:
        return len(self.kinds)

    @property
    def is_point(self) -> np.ndarray:
        return np.array([k == POINT for k in self.kinds], dtype=bool)

    @property
    def is_box(self) -> np.ndarray:
        return ~self.is_point


def _instance_rng(seed: int, image_id: int, annotation_id: int) -> np.random.Generator:
    # SeedSequence wants non-negative integers; fold possible negative ids into range
    return np.random.default_rng([seed % 2**63, image_id % 2**63, annotation_id % 2**63])


def box_center(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0], dtype=np.float32)


def interior_point(mask: np.ndarray, fraction: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """(x, y) of a pixel centre deep inside `mask` (HxW bool, non-empty).

    The image border counts as boundary (the mask is zero-padded), so the click keeps away
    from where the visible part is cut off. fraction 0: the deepest pixel (on a ridge of equal
    depth, the one nearest the mask's centroid; first in row-major order after that); otherwise a random pixel (from `rng`) with depth >= fraction * max depth.
    """
    if not mask.any():
        raise WpsSamError("cannot place an interior point in an empty mask")
    padded = np.pad(mask.astype(np.uint8), 1)
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    if fraction <= 0.0:  # a ridge of equally deep pixels: take the one nearest the mask's centroid
        rows, cols = np.nonzero(depth >= float(depth.max()) - 1e-4)
        mask_rows, mask_cols = np.nonzero(mask)
        nearest = np.argmin((rows - mask_rows.mean()) ** 2 + (cols - mask_cols.mean()) ** 2)
        row, col = rows[nearest], cols[nearest]
    else:
        rows, cols = np.nonzero(depth >= fraction * float(depth.max()))
        pick = int((rng or np.random.default_rng(0)).integers(len(rows)))
        row, col = rows[pick], cols[pick]
    return np.array([col + 0.5, row + 0.5], dtype=np.float32)


def make_weak_labels(instances: PartInstances, config: WeakLabelConfig) -> WeakLabels:
    """Weak labels for one image's instances (decodes only the masks an interior click needs)."""
    count = len(instances)
    boxes = np.full((count, 4), np.nan, dtype=np.float32)
    points = np.full((count, 2), np.nan, dtype=np.float32)
    kinds: list[str] = []
    for i in range(count):
        rng = _instance_rng(config.seed, instances.image_id, int(instances.annotation_ids[i]))
        if config.supervision == "mixed":
            kind = BOX if rng.random() < config.box_probability else POINT
        else:
            kind = config.supervision
        kinds.append(kind)
        box = instances.boxes[i]
        if kind == BOX:
            boxes[i] = box
        elif config.point_mode == "interior" and instances.rles[i] is not None:
            mask = decode_rles([instances.rles[i]], instances.height, instances.width)[0]
            points[i] = interior_point(mask, config.interior_fraction, rng)
        else:  # "center", or a box-only annotation that has no mask to click into
            points[i] = box_center(box)
    return WeakLabels(instances.image_id, instances.annotation_ids.copy(), instances.class_indices.copy(),
                      tuple(kinds), boxes, points)


def precompute_weak_labels(
    dataset: CocoPartDataset, config: WeakLabelConfig, indices: Iterable[int] | None = None,
) -> dict[int, WeakLabels]:
    """image_id -> WeakLabels for the whole dataset (or `indices`), computed once before training
    so the training loop never decodes a mask. Reads annotations only, no images."""
    labels: dict[int, WeakLabels] = {}
    for index in range(len(dataset)) if indices is None else indices:
        instances = dataset.instances(index)
        labels[instances.image_id] = make_weak_labels(instances, config)
    counts = {BOX: 0, POINT: 0}
    for weak in labels.values():
        for kind in weak.kinds:
            counts[kind] += 1
    kinds = {BOX: "boxes", POINT: f"{config.point_mode} points"}.get(
        config.supervision, f"boxes and {config.point_mode} points, seeded per instance")  # what is really used
    log.info("weak labels (%s, seed %d): %d boxes, %d points over %d images",
             kinds, config.seed, counts[BOX], counts[POINT], len(labels))
    return labels
