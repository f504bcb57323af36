"""Evaluation on a COCO-format part dataset: the learned prompter and the SAM baselines, side by side.

Methods (ids -> display names in METHOD_NAMES, the one place they are spelled):
  gt_boxes   SAM prompted with every ground-truth part box      -- the upper bound of the prompter,
             which is distilled from exactly these box prompts;
  gt_points  SAM prompted with one positive click per part      -- "center" (box centre, as in the
             reference) or "interior" (deepest mask pixel; data/weak_labels.py decides both);
  prompter   WPS-SAM: the prompter's confident queries, as PartSegmenter.segment_batch keeps them.

The frozen image encoder dominates the cost, so each batch is embedded ONCE and every method
decodes from the same embeddings (one mask-decoder call per method and batch). Ground truth is
the dataset's semantic label map (`PartInstances.semantic_labels`: overlaps -> the smaller part
wins; every pixel is background or a part, so no ignore value is needed). Overlapping predicted
masks are resolved like the segmenter does: by prompter score, or by SAM's IoU prediction for the
baselines. Both metric protocols are accumulated (metrics.py), and the instance metrics
(instances.py: PQ / SQ / RQ, COCO mask AP, duplicates per GT) on each method's part masks before
painting (InstanceMasks: overlapping, after the segmenter's duplicate suppression). The GT-box and
GT-point baselines give one mask per GT instance with its GT class, scored by SAM's IoU prediction.
Where the dataset records each part's object (`object_id`, the world), the painted parts are linked to
their objects as the segmenter does and scored by objects.py (part-to-object assignment accuracy).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.coco import CocoPartDataset, PartSample
from ..data.weak_labels import WeakLabelConfig, make_weak_labels
from ..errors import WpsSamError
from ..preprocess import ImageGeometry
from ..segmenter import InstanceMasks, PartSegmenter
from .instances import InstanceMetrics
from .geometry import DepthTruth, GeometryMetrics, gt_mask_floor
from .objects import SUMMARY_KEYS as OBJECT_SUMMARY_KEYS, ObjectMetrics, gt_object_ids
from .metrics import SegmentationMetrics

log = logging.getLogger(__name__)

GT_BOXES, GT_POINTS, PROMPTER = "gt_boxes", "gt_points", "prompter"
METHOD_NAMES: dict[str, str] = {
    GT_BOXES: "SAM + GT boxes (upper bound)",
    GT_POINTS: "SAM + GT points",
    PROMPTER: "WPS-SAM (prompter)",
}
METHODS = tuple(METHOD_NAMES)
DEFAULT_POINT_MODE = "interior"
# Why an image may be left out of an evaluation under skip_bad (beyond the dataset's own SKIP_REASONS).
UNREADABLE_IMAGE, NO_MASK = "unreadable_image", "no_mask"


@dataclass
class EvalBatch:
    """What every method sees for one batch: the images' samples and their (shared) SAM embeddings."""

    indices: list[int]
    samples: list[PartSample]
    embeddings: torch.Tensor
    geometries: list[ImageGeometry]


# A method turns a batch into, per image, its part masks before painting (InstanceMasks: scored for the
# instance metrics, painted with the segmenter's overlap rule for the label map), or only a predicted
# H x W label map (0 bg, k = class k): then the method has no instance metrics.
MethodOutput = InstanceMasks | np.ndarray
MethodFn = Callable[[PartSegmenter, EvalBatch], list[MethodOutput]]
# InstanceMetrics.compute() keys copied next to mIoU in each method's results; all of it is under "instances".
INSTANCE_SUMMARY_KEYS = ("pq", "sq", "rq", "ap", "ap50", "ap75", "duplicates_per_gt", "fragments_per_gt")


@dataclass
class EvaluationResult:
    metrics: dict[str, SegmentationMetrics]  # method id (or custom name) -> accumulated metrics
    num_images: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (dataset load + evaluation)
    seconds: float = 0.0
    point_mode: str = DEFAULT_POINT_MODE
    instance_metrics: dict[str, InstanceMetrics] = field(default_factory=dict)  # methods that give instances
    object_metrics: dict[str, ObjectMetrics] = field(default_factory=dict)  # the same, on a dataset with objects
    depth_metrics: dict[str, GeometryMetrics] = field(default_factory=dict)  # 3D centre errors (depth=True)
    depth_floor: GeometryMetrics | None = None  # the same for the GT masks themselves (depth=True)

    def results(self) -> dict[str, dict[str, Any]]:
        """Display name -> SegmentationMetrics.compute() plus, for a method with instances, the
        INSTANCE_SUMMARY_KEYS and the whole InstanceMetrics.compute() under "instances"; the shape
        report.write_report takes."""
        out = {}
        for method, m in self.metrics.items():
            row = m.compute()
            if method in self.instance_metrics:
                instances = self.instance_metrics[method].compute()
                row.update({key: instances[key] for key in INSTANCE_SUMMARY_KEYS}, instances=instances)
            if method in self.object_metrics:
                objects = self.object_metrics[method].compute()
                row.update({f"object_{key}": objects[key] for key in OBJECT_SUMMARY_KEYS}, objects=objects)
            if method in self.depth_metrics:
                row["depth3d"] = self.depth_metrics[method].compute()
            out[display_name(method)] = row
        return out


def display_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


# ----------------------------------------------------------------------------- the methods
def _decode_per_instance_prompts(seg: PartSegmenter, batch: EvalBatch, prompts: list[torch.Tensor]) -> list[InstanceMasks]:
    """prompts[i]: N_i x 2 x C tokens for image i's annotated instances (annotation order)."""
    device = batch.embeddings.device
    image_index = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(prompts)]).to(device)
    class_ids = torch.cat([torch.as_tensor(s.labels, dtype=torch.long) for s in batch.samples])
    tokens = torch.cat(prompts).to(device)
    return seg.decode_instances(batch.embeddings, batch.geometries, image_index, tokens, class_ids)


def predict_gt_boxes(seg: PartSegmenter, batch: EvalBatch) -> list[InstanceMasks]:
    prompts = []
    for sample, geometry in zip(batch.samples, batch.geometries):
        boxes = seg.transform.boxes_to_input(sample.boxes, geometry.original_size)
        prompts.append(seg.model.teacher_box_tokens(torch.as_tensor(boxes, dtype=torch.float32, device=seg.device)))
    return _decode_per_instance_prompts(seg, batch, prompts)


def point_method(point_mode: str) -> MethodFn:
    """The GT-point baseline with clicks placed by `point_mode` (see data/weak_labels.POINT_MODES)."""
    config = WeakLabelConfig(supervision="point", point_mode=point_mode)  # validates the mode

    def predict_gt_points(seg: PartSegmenter, batch: EvalBatch) -> list[InstanceMasks]:
        prompts = []
        for sample, geometry in zip(batch.samples, batch.geometries):
            points = make_weak_labels(sample, config).points
            points = seg.transform.points_to_input(points, geometry.original_size)
            prompts.append(seg.model.teacher_point_tokens(torch.as_tensor(points, dtype=torch.float32, device=seg.device)))
        return _decode_per_instance_prompts(seg, batch, prompts)

    return predict_gt_points


def predict_prompter(seg: PartSegmenter, batch: EvalBatch) -> list[InstanceMasks]:
    """segment_batch's prompter half, on the batch's shared embeddings."""
    return seg.instance_masks(batch.embeddings, batch.geometries)


def method_functions(methods: Sequence[str], point_mode: str = DEFAULT_POINT_MODE) -> dict[str, MethodFn]:
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown:
        raise WpsSamError(f"unknown evaluation method(s) {unknown}; choose from {list(METHODS)}")
    builders: dict[str, Callable[[], MethodFn]] = {
        GT_BOXES: lambda: predict_gt_boxes, GT_POINTS: lambda: point_method(point_mode), PROMPTER: lambda: predict_prompter,
    }
    return {m: builders[m]() for m in dict.fromkeys(methods)}


# ----------------------------------------------------------------------------- the loop
def check_classes_match(seg: PartSegmenter, dataset: CocoPartDataset) -> None:
    """Class k must mean the same part to the model and the dataset, or every score is meaningless."""
    if seg.class_names != dataset.class_names:
        raise WpsSamError(
            f"{dataset.annotation_file}: dataset classes {dataset.class_names} differ from the model's "
            f"{seg.class_names} (names and order must match); evaluate with a prompter trained on these categories")


def _load_sample(dataset: CocoPartDataset, index: int, skip_bad: bool, skipped: dict[str, int]):
    """(sample, GT label map), or None when the image is bad and skip_bad says to count it and go on."""
    reason = UNREADABLE_IMAGE
    try:
        sample = dataset[index]
        reason = NO_MASK
        return sample, sample.semantic_labels()  # raises naming the annotation if a part has no mask
    except WpsSamError as exc:
        if not skip_bad:
            raise
        skipped[reason] = skipped.get(reason, 0) + 1
        log.warning("skipped (%s): %s", reason, exc)
        return None


@torch.inference_mode()
def evaluate(
    segmenter: PartSegmenter,
    dataset: CocoPartDataset,
    methods: Sequence[str] = METHODS,
    point_mode: str = DEFAULT_POINT_MODE,
    batch_size: int = 4,
    max_images: int | None = None,
    progress: bool = True,
    skip_bad: bool | None = None,
    custom_methods: Mapping[str, MethodFn] | None = None,
    depth: bool = False,
) -> EvaluationResult:
    """Run `methods` (ids of METHOD_NAMES) plus `custom_methods` (name -> MethodFn) over the dataset.

    skip_bad (default: the dataset's own setting): an image that cannot be read, or with a part
    that has no mask, is counted and left out instead of raising.
    depth: also the 3D part-centre errors (geometry.py) on a dataset written with `wps-sam world --depth`.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise WpsSamError(f"batch_size must be >= 1, got {batch_size}")
    if max_images is not None and max_images < 1:
        raise WpsSamError(f"max_images must be >= 1, got {max_images}")
    check_classes_match(segmenter, dataset)
    functions = {**method_functions(methods, point_mode), **(custom_methods or {})}
    if not functions:
        raise WpsSamError("no evaluation method selected")
    skip_bad = dataset.skip_bad if skip_bad is None else skip_bad
    skipped = dict(dataset.skip_counts)
    metrics = {name: SegmentationMetrics(dataset.num_classes, dataset.class_names, ignore_index=None)
               for name in functions}
    instance_metrics: dict[str, InstanceMetrics] = {}
    object_metrics: dict[str, ObjectMetrics] = {}
    objects_of = gt_object_ids(dataset.annotation_file)  # None: the dataset does not say which object a part is of
    depth_truth = DepthTruth(dataset.annotation_file) if depth else None
    depth_metrics: dict[str, GeometryMetrics] = {}
    depth_floor = GeometryMetrics() if depth else None
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    if count == 0:
        raise WpsSamError(f"{dataset.annotation_file}: no annotated images to evaluate")

    started = time.perf_counter()
    evaluated = 0
    bar = tqdm(total=count, unit="img", desc="eval", disable=not progress)
    for start in range(0, count, batch_size):
        indices = list(range(start, min(start + batch_size, count)))
        loaded = [(i, item) for i in indices if (item := _load_sample(dataset, i, skip_bad, skipped)) is not None]
        bar.update(len(indices))
        if not loaded:
            continue
        samples = [sample for _, (sample, _) in loaded]
        gts = [gt for _, (_, gt) in loaded]
        embeddings, geometries = segmenter.embed([s.image for s in samples])
        batch = EvalBatch([i for i, _ in loaded], samples, embeddings, geometries)
        for sample in samples if depth_truth is not None else ():
            gt_mask_floor(sample, depth_truth, depth_floor, segmenter.class_names)
        for name, predict in functions.items():
            for pred, sample, gt in zip(predict(segmenter, batch), samples, gts, strict=True):
                if isinstance(pred, InstanceMasks):
                    if name not in instance_metrics:
                        instance_metrics[name] = InstanceMetrics(dataset.class_names)
                    instance_metrics[name].add(sample.image_id, sample.masks, sample.labels, pred.masks,
                                               pred.class_ids, pred.scores)
                    painted = segmenter.assemble(pred)  # painted as segment() does, parts linked to objects
                    if objects_of is not None:
                        object_metrics.setdefault(name, ObjectMetrics()).add(
                            sample.masks, sample.labels, [objects_of[int(a)] for a in sample.annotation_ids],
                            np.array([p.mask for p in painted.instances]).reshape(-1, *gt.shape),
                            [p.class_id for p in painted.instances], [p.object_id for p in painted.instances])
                    if depth_truth is not None:
                        depth_metrics.setdefault(name, GeometryMetrics()).add(sample, painted, depth_truth)
                    pred = painted.labels
                metrics[name].update(pred, gt)
        evaluated += len(samples)
    bar.close()
    if evaluated == 0:
        raise WpsSamError(f"{dataset.annotation_file}: every image was skipped as bad ({skipped})")
    return EvaluationResult(metrics, evaluated, skipped, time.perf_counter() - started, point_mode,
                            instance_metrics, object_metrics, depth_metrics, depth_floor)
