"""Mixed precision on GPU: bf16/fp16 autocast agrees with fp32, and CUDA fp32 agrees with CPU (skips without CUDA).

On the embedded model (procedural-world images, the scenes it was trained on) when its assets are
installed, else on the tiny test model with seeded random weights.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from wps_sam_core.embedded import EMBEDDED_PROMPTER, EMBEDDED_SAM_TYPE, EMBEDDED_SAM_WEIGHTS, embedded_available
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings

from conftest import TEST_CLASSES, make_tiny_model, random_image

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="bf16/fp16 autocast and CUDA-vs-CPU agreement need a CUDA GPU; none here")

MIN_MIOU = 0.98


@pytest.fixture(scope="module")
def subject():
    """(model on CPU, class names, settings, images)."""
    if embedded_available():
        from wps_sam_core.data.world import render_scene

        seg = PartSegmenter.from_checkpoints(EMBEDDED_PROMPTER, EMBEDDED_SAM_TYPE, EMBEDDED_SAM_WEIGHTS, device="cpu")
        images = [render_scene(7, i, 256, "val").image for i in range(6)]
        return seg.model, seg.class_names, SegmenterSettings(), images
    images = [random_image(180 + 20 * i, 240, seed=i) for i in range(4)]
    return make_tiny_model(), TEST_CLASSES, SegmenterSettings(score_threshold=0.0, max_instances=5), images


def pooled_miou(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Label-map agreement: per class, IoU pooled over all images; mean over classes present in either."""
    classes = sorted(set().union(*(np.unique(x) for x in a + b)) - {0})
    if not classes:
        return 1.0
    ious = []
    for c in classes:
        inter = sum(int(((x == c) & (y == c)).sum()) for x, y in zip(a, b))
        union = sum(int(((x == c) | (y == c)).sum()) for x, y in zip(a, b))
        ious.append(inter / union)
    return float(np.mean(ious))


def labels(subject, device: str, precision: str) -> list[np.ndarray]:
    model, names, settings, images = subject
    seg = PartSegmenter(copy.deepcopy(model), names, device=device, precision=precision, settings=settings)
    assert seg.precision == precision  # not silently downgraded
    return [r.labels for r in seg.segment_batch(images)]


@needs_cuda
def test_cuda_fp32_agrees_with_cpu(subject):
    cpu, cuda = labels(subject, "cpu", "fp32"), labels(subject, "cuda", "fp32")
    assert any((x > 0).any() for x in cpu), "the check needs some part pixels to compare"
    assert pooled_miou(cpu, cuda) >= 0.99


@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_agrees_with_fp32(subject, precision):
    reference, mixed = labels(subject, "cuda", "fp32"), labels(subject, "cuda", precision)
    assert any((x > 0).any() for x in reference), "the check needs some part pixels to compare"
    assert pooled_miou(reference, mixed) >= MIN_MIOU


def test_pooled_miou_detects_disagreement():
    a = [np.array([[1, 1], [2, 0]])]
    assert pooled_miou(a, a) == 1.0
    assert pooled_miou(a, [np.array([[1, 2], [2, 0]])]) == pytest.approx((1 / 2 + 1 / 2) / 2)
