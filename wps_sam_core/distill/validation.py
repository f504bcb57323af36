"""Validation during training: dataset-level part metrics (sharded over ranks, merged exactly) and GT |
prediction overlays of a few fixed val images for TensorBoard."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.coco import CocoPartDataset
from ..evaluation.metrics import SegmentationMetrics
from ..modeling.wpssam import WPSSAM
from .config import BEST_METRICS

if TYPE_CHECKING:
    from ..segmenter import PartSegmenter


def _segmenter(model: WPSSAM, class_names: list[str], device) -> PartSegmenter:
    from ..segmenter import PartSegmenter

    return PartSegmenter(model, class_names, device=str(device))


@torch.no_grad()
def validate(fabric, model: WPSSAM, val_set: CocoPartDataset, max_images: int) -> dict:
    """SegmentationMetrics.compute() over the first `max_images` val images (each rank a slice, the
    confusion sums all-reduced): every rank returns the same dict. NaN means (no GT part) count as 0."""
    segmenter = _segmenter(model, val_set.class_names, fabric.device)
    metrics = SegmentationMetrics(val_set.num_classes, val_set.class_names)
    indices = list(range(min(len(val_set), max_images)))[fabric.global_rank::fabric.world_size]
    for start in range(0, len(indices), 4):
        samples = [val_set[i] for i in indices[start:start + 4]]
        for sample, result in zip(samples, segmenter.segment_batch([s.image for s in samples])):
            metrics.update(result.labels, sample.semantic_labels())
    model.prompter.train()
    state = torch.as_tensor(metrics.state_vector(), device=fabric.device)
    if fabric.world_size > 1:
        state = fabric.all_reduce(state, reduce_op="sum")
    merged = SegmentationMetrics.from_state_vector(state.cpu().numpy(), val_set.num_classes, val_set.class_names)
    result = merged.compute()
    for key in BEST_METRICS:  # the scalar means (run.best_metric picks one)
        result[key] = 0.0 if result[key] != result[key] else float(result[key])
    return result


def _pad_to(image: np.ndarray, height: int) -> np.ndarray:
    if image.shape[0] == height:
        return image
    pad = np.full((height - image.shape[0], image.shape[1], 3), 255, np.uint8)
    return np.concatenate([image, pad])


@torch.no_grad()
def overlays(model: WPSSAM, val_set: CocoPartDataset, count: int, device) -> list[np.ndarray]:
    """GT | prediction overlays (with legends) of val images 0..count-1: the same images at every validation."""
    from ..viz import overlay

    segmenter = _segmenter(model, val_set.class_names, device)
    samples = [val_set[i] for i in range(min(count, len(val_set)))]
    results = segmenter.segment_batch([s.image for s in samples]) if samples else []
    model.prompter.train()
    panels = []
    for sample, result in zip(samples, results):
        gt = overlay(sample.image, sample.semantic_labels(), None, val_set.class_names)
        pred = overlay(sample.image, result.labels, result.instance_ids, val_set.class_names)
        height = max(gt.shape[0], pred.shape[0])
        gap = np.full((height, 8, 3), 255, np.uint8)
        panels.append(np.concatenate([_pad_to(gt, height), gap, _pad_to(pred, height)], axis=1))
    return panels
