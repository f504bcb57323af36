"""PartSegmenter on tiny random weights: shapes, dtypes, map/instance consistency, batching, input checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wps_sam_core.errors import WpsSamError
from wps_sam_core.postprocess.dedup import DEDUP_METHODS
from wps_sam_core.preprocess import ImageGeometry
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings, assemble

from conftest import TEST_CLASSES, make_tiny_model, random_image


@pytest.fixture(scope="module")
def segmenter():
    return PartSegmenter(make_tiny_model(), TEST_CLASSES, device="cpu", settings=SegmenterSettings(score_threshold=0.0))


def check_consistent(result, shape):
    assert result.labels.shape == shape and result.labels.dtype == np.uint8
    assert result.instance_ids.shape == shape and result.instance_ids.dtype == np.uint16
    ids = set(np.unique(result.instance_ids)) - {0}
    assert ids == {inst.instance_id for inst in result.instances}
    assert [inst.instance_id for inst in result.instances] == list(range(1, len(result.instances) + 1))
    assert np.array_equal(result.labels > 0, result.instance_ids > 0)
    for inst in result.instances:
        region = result.instance_ids == inst.instance_id
        assert np.array_equal(region, inst.mask)
        assert np.all(result.labels[region] == inst.class_id)
        assert inst.class_name == TEST_CLASSES[inst.class_id - 1]
        ys, xs = np.nonzero(region)
        assert inst.box_xyxy == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert 0 <= inst.box_xyxy[0] < inst.box_xyxy[2] <= shape[1]
        assert 0 <= inst.box_xyxy[1] < inst.box_xyxy[3] <= shape[0]
    scores = [inst.score for inst in result.instances]
    assert scores == sorted(scores, reverse=True)


def test_shapes_dtypes_and_consistency_on_non_square_image(segmenter):
    result = segmenter.segment(random_image(90, 210))
    check_consistent(result, (90, 210))
    assert len(result.instances) > 0  # forced-part model keeps its queries


def test_batched_equals_one_by_one(segmenter):
    images = [random_image(90, 210, 1), random_image(256, 256, 2), random_image(300, 120, 3)]
    batched = segmenter.segment_batch(images)
    for image, joint in zip(images, batched):
        alone = segmenter.segment(image)
        assert np.array_equal(joint.labels, alone.labels)
        assert np.array_equal(joint.instance_ids, alone.instance_ids)
        assert [(i.class_id, i.box_xyxy) for i in joint.instances] == [(i.class_id, i.box_xyxy) for i in alone.instances]
        assert [i.score for i in joint.instances] == pytest.approx([i.score for i in alone.instances], abs=1e-5)


def test_deterministic(segmenter):
    image = random_image(128, 160, 7)
    a, b = segmenter.segment(image), segmenter.segment(image)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.instance_ids, b.instance_ids)


def test_decodes_only_kept_queries_in_one_call(segmenter, monkeypatch):
    calls = []
    original = segmenter.model.decode

    def counting(embeddings, image_index, tokens):
        calls.append(tokens.shape[0])
        return original(embeddings, image_index, tokens)

    monkeypatch.setattr(segmenter.model, "decode", counting)
    segmenter.update_settings(max_instances=3)
    try:
        segmenter.segment_batch([random_image(64, 64, 1), random_image(80, 64, 2)])
    finally:
        segmenter.update_settings(max_instances=25)
    assert calls == [6]  # 3 kept queries per image, both images, one decoder pass


def test_threshold_one_keeps_nothing(segmenter):
    segmenter.update_settings(score_threshold=1.0)
    try:
        result = segmenter.segment(random_image(50, 70))
    finally:
        segmenter.update_settings(score_threshold=0.0)
    assert result.instances == [] and not result.labels.any() and not result.instance_ids.any()


def test_no_object_queries_are_not_decoded():
    seg = PartSegmenter(make_tiny_model(force_parts=False), TEST_CLASSES, device="cpu")
    with torch.no_grad():
        seg.model.prompter.class_head.bias[-1] = 50.0  # every query says "no object"
    assert seg.segment(random_image(64, 64)).instances == []


def test_class_filter(segmenter):
    segmenter.update_settings(class_filter=["mug_handle"])
    try:
        result = segmenter.segment(random_image(100, 100, 5))
    finally:
        segmenter.update_settings(class_filter=[])
    assert all(inst.class_name == "mug_handle" for inst in result.instances)


@pytest.mark.parametrize("image,expected", [
    (np.zeros((40, 50), np.uint8), (40, 50)),
    (np.zeros((40, 50, 1), np.uint8), (40, 50)),
    (np.zeros((40, 50, 4), np.uint8), (40, 50)),
])
def test_grayscale_and_rgba_are_converted(segmenter, image, expected):
    assert segmenter.segment(image).labels.shape == expected


def test_grayscale_equals_replicated_rgb(segmenter):
    gray = random_image(60, 80)[:, :, 0]
    a = segmenter.segment(gray)
    b = segmenter.segment(np.repeat(gray[:, :, None], 3, axis=2))
    assert np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("image,message", [
    (np.zeros((40, 50, 3), np.float32), "dtype uint8"),
    (np.zeros((40, 50, 2), np.uint8), "shape"),
    (np.zeros((2, 40, 50, 3), np.uint8), "shape"),
    (np.zeros((0, 50, 3), np.uint8), "empty"),
    ([[1, 2]], "numpy array"),
])
def test_bad_images_are_rejected_with_a_clear_error(segmenter, image, message):
    with pytest.raises(WpsSamError, match=message):
        segmenter.segment(image)


@pytest.mark.parametrize("changes,message", [
    ({"score_threshold": 1.5}, "score_threshold"),
    ({"max_instances": 0}, "max_instances"),
    ({"mask_threshold": float("nan")}, "mask_threshold"),
    ({"class_filter": ["wing"]}, "unknown classes"),
    ({"overlap": "largest"}, "overlap must be one of"),
    ({"dedup_iou": 1.5}, r"^dedup_iou must be in \[0, 1\] \(0 = off\), got 1.5$"),
    ({"dedup_iou": -0.1}, r"^dedup_iou must be in \[0, 1\] \(0 = off\), got -0.1$"),
    ({"dedup_iou": float("nan")}, r"^dedup_iou must be in \[0, 1\]"),
    ({"dedup_iou": "0.5"}, r"^dedup_iou must be a number, got '0.5'$"),
    ({"dedup_iou": True}, r"^dedup_iou must be a number, got True$"),
])
def test_invalid_settings_are_rejected_and_change_nothing(segmenter, changes, message):
    before = segmenter.settings
    with pytest.raises(WpsSamError, match=message):
        segmenter.update_settings(**changes)
    assert segmenter.settings == before


def test_overlaps_resolved_by_score():
    a = np.zeros((10, 10), bool); a[2:8, 2:8] = True
    b = np.zeros((10, 10), bool); b[5:10, 5:10] = True
    result = assemble(np.stack([a, b]), np.array([1, 2]), np.array([0.9, 0.4])[::-1].copy(), np.zeros(2), TEST_CLASSES,
                      overlap="score")
    assert result.labels[6, 6] == 2 and result.labels[3, 3] == 1  # higher score wins the overlap
    assert [i.class_id for i in result.instances] == [2, 1]
    hidden = assemble(np.stack([a, a]), np.array([1, 3]), np.array([0.2, 0.8]), np.zeros(2), TEST_CLASSES)
    assert len(hidden.instances) == 1 and hidden.instances[0].class_id == 3


def test_nested_part_stays_visible_on_top_of_a_confident_body():
    """A window inside a car body: smaller_on_top (the default) keeps it; score lets the body swallow it."""
    body = np.zeros((12, 12), bool); body[1:11, 1:11] = True
    window = np.zeros((12, 12), bool); window[3:6, 3:7] = True
    masks, classes, scores = np.stack([body, window]), np.array([1, 2]), np.array([0.95, 0.6])
    nested = assemble(masks, classes, scores, np.zeros(2), TEST_CLASSES)
    assert (nested.labels[window] == 2).all() and (nested.labels[body & ~window] == 1).all()
    assert [i.class_id for i in nested.instances] == [1, 2]  # instances stay ordered by score
    assert nested.instances[0].mask.sum() == body.sum() - window.sum()
    swallowed = assemble(masks, classes, scores, np.zeros(2), TEST_CLASSES, overlap="score")
    assert (swallowed.labels[body] == 1).all() and len(swallowed.instances) == 1


def test_dedup_iou_bounds_are_inclusive_and_the_default_is_on():
    assert 0 < SegmenterSettings().dedup_iou <= 1
    for value in (0, 0.0, 1, 1.0):
        assert SegmenterSettings(dedup_iou=value).validated(TEST_CLASSES).dedup_iou == value


def rect(y0, y1, x0, x1, size=64):
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def decode_fixed(segmenter, monkeypatch, masks, classes, scores, **settings):
    """The segmenter's decode path with the mask decoder replaced by these 64 x 64 low-res masks (as logits)
    on a 64 x 64 image: (InstanceMasks before painting, PartSegmentation)."""
    logits = torch.stack([torch.where(m, 8.0, -8.0) for m in masks])[:, None]
    monkeypatch.setattr(segmenter.model, "decode", lambda emb, idx, tok: (logits.clone(), torch.full((len(tok),), 0.5)))
    args = (torch.zeros(1, 1, 1, 1), [ImageGeometry((64, 64), (256, 256))], torch.zeros(len(masks), dtype=torch.long),
            torch.zeros(len(masks), 2, 8), torch.tensor(classes), torch.tensor(scores))
    chosen = SegmenterSettings(**settings).validated(TEST_CLASSES)
    raw = segmenter.decode_instances(*args, settings=chosen)[0]
    result = segmenter.decode_prompts(*args, settings=chosen)[0]
    return raw, result


@pytest.mark.parametrize("method", DEDUP_METHODS)
def test_duplicates_are_one_instance_and_label_and_instance_maps_agree(segmenter, monkeypatch, method):
    """The demo's pattern: two queries for the halves of one part and one for the whole (class 1), plus a
    part of class 2 inside the left half, which another class never suppresses."""
    left, right, whole, inner = rect(10, 40, 10, 30), rect(10, 40, 30, 50), rect(10, 40, 10, 50), rect(15, 35, 12, 28)
    masks, classes, scores = [left, right, whole, inner], [1, 1, 1, 2], [0.9, 0.8, 0.6, 0.7]
    monkeypatch.setattr(segmenter, "dedup_method", method)
    raw_off, off = decode_fixed(segmenter, monkeypatch, masks, classes, scores, dedup_iou=0.0)
    assert raw_off.class_ids.tolist() == [1, 1, 1, 2]
    raw, result = decode_fixed(segmenter, monkeypatch, masks, classes, scores, dedup_iou=0.4)
    check_consistent(result, (64, 64))
    # label map and instance map come from the same kept masks
    assert np.array_equal(result.labels > 0, raw.masks.any(0)) and np.array_equal(result.instance_ids > 0, raw.masks.any(0))
    assert sorted(i.class_id for i in result.instances) == sorted(raw.class_ids.tolist())
    assert raw.class_ids.tolist().count(2) == 1
    if method == "merge":  # one class-1 instance: the best-scored query, holding the union of the three masks
        assert raw.class_ids.tolist() == [1, 2] and raw.scores.tolist() == pytest.approx([0.9, 0.7])
        assert np.array_equal(raw.masks[0], whole.numpy())
        assert np.array_equal(result.labels > 0, off.labels > 0)  # no pixel lost
    else:  # NMS drops the whole (IoU 0.5 with each half) and keeps both halves (IoU 0 with each other)
        assert raw.class_ids.tolist() == [1, 1, 2]
        assert [np.array_equal(m, h.numpy()) for m, h in zip(raw.masks[:2], (left, right))] == [True, True]


def test_dedup_off_and_a_single_mask_are_left_alone(segmenter, monkeypatch):
    a = rect(0, 20, 0, 20)
    raw, _ = decode_fixed(segmenter, monkeypatch, [a, a], [1, 1], [0.9, 0.8], dedup_iou=0.0)
    assert len(raw.masks) == 2
    raw, _ = decode_fixed(segmenter, monkeypatch, [a, a], [1, 1], [0.9, 0.8], dedup_iou=1.0)  # IoU 1 is not > 1
    assert len(raw.masks) == 2
    raw, result = decode_fixed(segmenter, monkeypatch, [a], [3], [0.9])
    assert raw.class_ids.tolist() == [3] and len(result.instances) == 1
