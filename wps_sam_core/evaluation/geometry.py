"""3D part-centre error (`wps-sam eval --depth`) on a dataset with depth (`wps-sam world --depth`).

Per image and method: the painted part instances (what a robot receives) are lifted with lift_to_3d on the
image's depth, once per depth variant ("noise_free": depth_file; "sensor_noise": noisy_depth_file, when the
world was written with --depth-noise). Predicted parts are matched to GT parts one to one: same class, mask
IoU > 0.5 (objects.match_parts, as for PQ). For each matched part: error = Euclidean distance (metres)
between the lifted centre and the GT `centre_3d_m`, or "no depth" when the part has no valid depth pixel.
GT centres are lift_to_3d's robust centre of the GT mask on the noise-free depth (data/world_depth.py), so
with GT masks and the noise-free depth the error is 0 by construction: what is measured is the pipeline
(masks, sensor noise, robust centre), not a difference of centre definitions. The "GT masks" row (the
floor) lifts the GT masks themselves: the sensor noise's share of the error.

Reported per variant: matched parts, median and 90th-percentile error, matched parts without depth, and the
same by GT distance (DISTANCE_BINS_M on the GT centre's z).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..data.world_depth import read_depth
from ..errors import WpsSamError
from ..postprocess.geometry3d import CameraIntrinsics, lift_to_3d
from .objects import match_parts

VARIANTS = {"noise_free": "depth_file", "sensor_noise": "noisy_depth_file"}  # variant -> camera entry key
DISTANCE_BINS_M = (0.0, 0.8, 1.2, 2.0, math.inf)  # "at 1 m" = the 0.8-1.2 m bin


def bin_name(low: float, high: float) -> str:
    return f"{low:g}-{high:g} m" if math.isfinite(high) else f">= {low:g} m"


class DepthTruth:
    """The depth side of a COCO part file: per image its K and depth files, per part annotation its GT centre.
    Depth paths are relative to the dataset root (the folder holding annotations/ and images/)."""

    def __init__(self, annotation_file: str | Path) -> None:
        path = Path(annotation_file)
        data = json.loads(path.read_text(encoding="utf-8"))
        self.root = path.resolve().parents[2]
        self.cameras = {img["id"]: img.get("camera") for img in data.get("images", []) if isinstance(img, dict)}
        if not self.cameras or not any(isinstance(c, dict) for c in self.cameras.values()):
            raise WpsSamError(f"{path}: no image has a 'camera' entry with depth; write the world with "
                              "`wps-sam world --depth` (or --depth-noise)")
        self.centres = {ann["id"]: ann.get("centre_3d_m") for ann in data.get("annotations", [])
                        if isinstance(ann, dict)}
        present = [v for v, key in VARIANTS.items() if all(isinstance(c, dict) and key in c
                                                            for c in self.cameras.values())]
        self.variants = tuple(present) or ("noise_free",)
        self._load = lru_cache(maxsize=8)(self._read)

    def centres_of(self, sample) -> np.ndarray:
        """G x 3 GT centres of the sample's annotations (annotation order)."""
        out = []
        for ann_id in sample.annotation_ids:
            centre = self.centres.get(int(ann_id))
            if not (isinstance(centre, list) and len(centre) == 3):
                raise WpsSamError(f"{sample.file_name}: part annotation {int(ann_id)} has no centre_3d_m "
                                  "(3 numbers, metres)")
            out.append(centre)
        return np.asarray(out, np.float64).reshape(-1, 3)

    def depths(self, sample) -> dict[str, tuple[np.ndarray, CameraIntrinsics, float]]:
        """variant -> (depth, K, depth_scale) of the sample's image (read once for all methods)."""
        return self._load(int(sample.image_id), sample.height, sample.width, sample.file_name)

    def _read(self, image_id: int, height: int, width: int, name: str):
        camera = self.cameras.get(image_id)
        if not isinstance(camera, dict) or "K" not in camera or "depth_file" not in camera:
            raise WpsSamError(f"{name}: image {image_id} has no 'camera' entry with K and depth_file")
        k = CameraIntrinsics.from_matrix(camera["K"], width, height)
        scale = float(camera.get("depth_unit_m", 0.001))
        return {v: (read_depth(self.root / camera[VARIANTS[v]], (height, width)), k, scale) for v in self.variants}


@dataclass
class _Errors:
    errors: list[float] = field(default_factory=list)
    gt_z: list[float] = field(default_factory=list)
    no_depth: int = 0
    no_depth_z: list[float] = field(default_factory=list)


class GeometryMetrics:
    """Accumulates the 3D centre errors of one method over images (`add`); `compute` gives the numbers."""

    def __init__(self) -> None:
        self.by_variant: dict[str, _Errors] = {}

    def add(self, sample, painted, truth: DepthTruth) -> None:
        """painted: the method's PartSegmentation of the sample's image."""
        masks = np.array([p.mask for p in painted.instances]).reshape(-1, sample.height, sample.width)
        pairs = match_parts(sample.masks, sample.labels, masks, [p.class_id for p in painted.instances])
        gt = truth.centres_of(sample)
        for variant, (depth, k, scale) in truth.depths(sample).items():
            lifted = {p.instance_id: p for p in lift_to_3d(painted, depth, k, scale).parts}
            acc = self.by_variant.setdefault(variant, _Errors())
            for gi, pi in pairs:
                part = lifted.get(painted.instances[pi].instance_id)
                if part is None:
                    acc.no_depth += 1
                    acc.no_depth_z.append(float(gt[gi, 2]))
                    continue
                acc.errors.append(float(np.linalg.norm(np.subtract(part.centre, gt[gi]))))
                acc.gt_z.append(float(gt[gi, 2]))

    def compute(self) -> dict[str, Any]:
        return {variant: _summary(acc) for variant, acc in self.by_variant.items()}


def _summary(acc: _Errors) -> dict[str, Any]:
    errors, z, missing_z = np.asarray(acc.errors), np.asarray(acc.gt_z), np.asarray(acc.no_depth_z)
    bins = []
    for low, high in zip(DISTANCE_BINS_M[:-1], DISTANCE_BINS_M[1:]):
        inside = (z >= low) & (z < high)
        bins.append({"bin": bin_name(low, high), **_stats(errors[inside]),
                     "no_depth": int(((missing_z >= low) & (missing_z < high)).sum())})
    return {**_stats(errors), "no_depth": acc.no_depth, "by_distance": bins}


def _stats(errors: np.ndarray) -> dict[str, Any]:
    if errors.size == 0:
        return {"matched": 0, "median_m": math.nan, "p90_m": math.nan, "mean_m": math.nan}
    return {"matched": int(errors.size), "median_m": float(np.median(errors)),
            "p90_m": float(np.percentile(errors, 90)), "mean_m": float(errors.mean())}


def gt_mask_floor(sample, truth: DepthTruth, floor: GeometryMetrics, class_names: list[str]) -> None:
    """Lift the GT masks themselves (the 'GT masks' row): with noise-free depth the error is 0."""
    floor.add(sample, _GtSegmentation(sample, class_names), truth)


class _GtSegmentation:
    """The GT part masks in PartSegmentation's layout (instance i + 1 = annotation i), for lift_to_3d."""

    def __init__(self, sample, class_names: list[str]) -> None:
        masks = sample.masks
        self.instance_ids = np.zeros((sample.height, sample.width), np.uint16)
        for i in range(len(masks) - 1, -1, -1):  # GT masks do not overlap in the world; first wins otherwise
            self.instance_ids[masks[i]] = i + 1
        self.labels = np.zeros_like(self.instance_ids)
        self.class_names = class_names
        self.instances = [_GtPart(i + 1, int(c), class_names[int(c) - 1], self.instance_ids == i + 1)
                          for i, c in enumerate(sample.labels)]


@dataclass
class _GtPart:
    instance_id: int
    class_id: int
    class_name: str
    mask: np.ndarray
    score: float = 1.0
