"""Both metric protocols against hand-computed values on 4x4 label maps, merging, and the report tables."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wps_sam_core.errors import WpsSamError
from wps_sam_core.evaluation.metrics import SegmentationMetrics
from wps_sam_core.evaluation.report import (
    per_class_markdown,
    render_markdown,
    results_json,
    summary_markdown,
    write_report,
)

NAMES = ["head", "tail"]

# Image A: both parts present. Class 1: GT 4 px, pred 5 px, TP 4 -> IoU 4/5, Acc 1.
#          Class 2: GT 4 px, pred 3 px, TP 3 -> IoU 3/4, Acc 3/4.
GT_A = np.array([[0, 0, 1, 1],
                 [0, 0, 1, 1],
                 [2, 2, 0, 0],
                 [2, 2, 0, 0]], dtype=np.uint8)
PRED_A = np.array([[0, 0, 1, 1],
                   [0, 1, 1, 1],
                   [2, 0, 0, 0],
                   [2, 2, 0, 0]], dtype=np.uint8)
# Image B: class 2 absent from GT but predicted on 4 valid pixels (+2 ignored ones); two GT pixels ignored.
#          Class 1: GT 4, pred 3, TP 3 -> IoU 3/4, Acc 3/4.
GT_B = np.array([[1, 1, 0, 0],
                 [1, 1, 0, 0],
                 [0, 0, 0, 0],
                 [255, 255, 0, 0]], dtype=np.uint8)
PRED_B = np.array([[1, 0, 0, 0],
                   [1, 1, 2, 2],
                   [0, 0, 0, 0],
                   [2, 2, 2, 2]], dtype=np.uint8)


def metrics_over(pairs, num_classes=2, names=NAMES, **kwargs) -> SegmentationMetrics:
    m = SegmentationMetrics(num_classes, names, **kwargs)
    for pred, gt in pairs:
        m.update(pred, gt)
    return m


def test_confusion_matrix_by_hand():
    m = metrics_over([(PRED_A, GT_A), (PRED_B, GT_B)])
    # rows = GT (bg, head, tail), cols = prediction; ignored pixels of B are nowhere.
    expected = np.array([[7 + 6, 1 + 0, 0 + 4],
                         [0 + 1, 4 + 3, 0 + 0],
                         [1 + 0, 0 + 0, 3 + 0]])
    np.testing.assert_array_equal(m.confusion, expected)


def test_paper_protocol_by_hand():
    r = metrics_over([(PRED_A, GT_A), (PRED_B, GT_B)]).compute()
    # pairs: (A, head) 4/5 & 1, (A, tail) 3/4 & 3/4, (B, head) 3/4 & 3/4; (B, tail) is no pair.
    assert r["paper_pairs"] == 3
    assert r["paper_mIoU"] == pytest.approx((0.8 + 0.75 + 0.75) / 3)
    assert r["paper_mAcc"] == pytest.approx((1.0 + 0.75 + 0.75) / 3)
    head, tail = r["per_class"][1], r["per_class"][2]
    assert head["paper_IoU"] == pytest.approx((0.8 + 0.75) / 2) and head["paper_images"] == 2
    assert tail["paper_IoU"] == pytest.approx(0.75) and tail["paper_images"] == 1
    assert math.isnan(r["per_class"][0]["paper_IoU"])  # background is never a pair


def test_standard_protocol_by_hand():
    r = metrics_over([(PRED_A, GT_A), (PRED_B, GT_B)]).compute()
    bg, head, tail = r["per_class"]
    assert head["IoU"] == pytest.approx(7 / 9) and head["Acc"] == pytest.approx(7 / 8)
    assert tail["IoU"] == pytest.approx(3 / 8) and tail["Acc"] == pytest.approx(3 / 4)
    assert bg["IoU"] == pytest.approx(13 / 20) and bg["Acc"] == pytest.approx(13 / 18)
    assert r["mIoU"] == pytest.approx((7 / 9 + 3 / 8) / 2)
    assert r["mAcc"] == pytest.approx((7 / 8 + 3 / 4) / 2)
    assert r["mIoU_with_background"] == pytest.approx((13 / 20 + 7 / 9 + 3 / 8) / 3)
    assert r["mAcc_with_background"] == pytest.approx((13 / 18 + 7 / 8 + 3 / 4) / 3)
    assert r["pixel_acc"] == pytest.approx(23 / 30)
    assert (r["num_pixels"], r["num_images"], r["classes_in_gt"]) == (30, 2, 2)


def test_absent_class_predicted_paper_unaffected():
    without_fp = np.where(PRED_B == 2, 0, PRED_B).astype(np.uint8)
    with_fp = metrics_over([(PRED_B, GT_B)]).compute()
    clean = metrics_over([(without_fp, GT_B)]).compute()
    assert with_fp["paper_mIoU"] == clean["paper_mIoU"] == pytest.approx(0.75)
    assert with_fp["paper_mAcc"] == clean["paper_mAcc"] == pytest.approx(0.75)
    assert with_fp["paper_pairs"] == 1
    # the standard protocol does see the false positives, through the background's IoU
    assert with_fp["mIoU_with_background"] < clean["mIoU_with_background"]


def test_standard_rule_for_classes_absent_from_gt():
    # 3 classes on image B alone: tail (2) predicted but never in GT, class 3 never anywhere.
    r = metrics_over([(PRED_B, GT_B)], num_classes=3, names=["head", "tail", "wing"]).compute()
    bg, head, tail, wing = r["per_class"]
    assert tail["IoU"] == 0.0 and math.isnan(tail["Acc"])  # reported as 0 ...
    assert math.isnan(wing["IoU"]) and math.isnan(wing["Acc"])
    assert r["mIoU"] == pytest.approx(head["IoU"]) == pytest.approx(3 / 4)  # ... but excluded from the mean
    assert r["mAcc"] == pytest.approx(3 / 4)
    assert bg["IoU"] == pytest.approx(6 / 11)
    assert r["mIoU_with_background"] == pytest.approx((3 / 4 + 6 / 11) / 2)
    assert (r["classes_in_gt"], r["classes_predicted_not_in_gt"]) == (1, 1)


def test_ignore_pixels_excluded_everywhere():
    other_pred = PRED_B.copy()
    other_pred[3, :2] = [1, 0]  # change only the predictions on ignored GT pixels
    a = metrics_over([(PRED_B, GT_B)])
    b = metrics_over([(other_pred, GT_B)])
    np.testing.assert_array_equal(a.confusion, b.confusion)
    assert a.compute()["num_pixels"] == 14
    assert a.compute()["paper_mIoU"] == b.compute()["paper_mIoU"]
    custom = metrics_over([(PRED_B, np.where(GT_B == 255, 7, GT_B))], ignore_index=7)
    np.testing.assert_array_equal(custom.confusion, a.confusion)
    with pytest.raises(WpsSamError, match="ground truth label map holds value 255"):
        metrics_over([(PRED_B, GT_B)], ignore_index=None)


def test_background_handling():
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[0, 0] = 1
    pred = np.zeros_like(gt)  # misses the only part pixel
    r = metrics_over([(pred, gt)]).compute()
    assert r["paper_mIoU"] == 0.0 and r["paper_mAcc"] == 0.0
    assert r["mIoU"] == 0.0 and r["mAcc"] == 0.0  # only the GT-present part class (head) counts
    assert r["per_class"][0]["IoU"] == pytest.approx(15 / 16)
    assert r["mIoU_with_background"] == pytest.approx(15 / 32)
    assert r["pixel_acc"] == pytest.approx(15 / 16)
    only_bg = metrics_over([(pred, np.zeros_like(gt))]).compute()
    assert only_bg["paper_pairs"] == 0 and math.isnan(only_bg["paper_mIoU"]) and math.isnan(only_bg["mIoU"])
    assert only_bg["mIoU_with_background"] == 1.0


def test_perfect_prediction_is_one():
    r = metrics_over([(GT_A, GT_A), (GT_B, GT_B)]).compute()
    for key in ("paper_mIoU", "paper_mAcc", "mIoU", "mAcc", "mIoU_with_background", "mAcc_with_background",
                "pixel_acc"):
        assert r[key] == 1.0, key


def random_pairs(rng, count, num_classes, shape=(9, 11)):
    pairs = []
    for _ in range(count):
        gt = rng.integers(0, num_classes + 1, size=shape).astype(np.uint8)
        gt[rng.random(shape) < 0.1] = 255
        pred = np.where(rng.random(shape) < 0.6, gt, rng.integers(0, num_classes + 1, size=shape)).astype(np.uint8)
        pred[pred == 255] = 0
        pairs.append((pred, gt))
    return pairs


def flatten(value, prefix=""):
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def assert_same_results(a: dict, b: dict):
    """Equal up to float summation order (paper sums are added in a different order after a merge)."""
    flat_a, flat_b = flatten(json.loads(results_json({"x": a}))), flatten(json.loads(results_json({"x": b})))
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        assert flat_b[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), key


def test_merge_and_state_vector_equal_one_accumulator():
    pairs = random_pairs(np.random.default_rng(0), 12, num_classes=4)
    whole = metrics_over(pairs, num_classes=4, names=None)
    first = metrics_over(pairs[:5], num_classes=4, names=None)
    second = metrics_over(pairs[5:], num_classes=4, names=None)
    vector_sum = first.state_vector() + second.state_vector()  # what an all-reduce SUM does
    merged = first.merge(second)
    np.testing.assert_array_equal(merged.confusion, whole.confusion)
    assert merged.num_images == 12
    assert_same_results(merged.compute(), whole.compute())
    restored = SegmentationMetrics.from_state_vector(vector_sum, 4)
    assert isinstance(restored.num_images, int) and restored.num_images == 12
    assert_same_results(restored.compute(), whole.compute())
    with pytest.raises(WpsSamError, match="cannot merge"):
        whole.merge(SegmentationMetrics(3))


def test_batch_update_and_naive_reference():
    rng = np.random.default_rng(1)
    pairs = random_pairs(rng, 6, num_classes=3)
    batched = SegmentationMetrics(3)
    batched.update(np.stack([p for p, _ in pairs]), np.stack([g for _, g in pairs]))
    r = batched.compute()
    assert_same_results(r, metrics_over(pairs, num_classes=3, names=None).compute())
    # naive per-pair loop for the paper protocol
    ious, accs = [], []
    for pred, gt in pairs:
        valid = gt != 255
        for k in range(1, 4):
            g, p = (gt == k) & valid, (pred == k) & valid
            if g.any():
                ious.append((g & p).sum() / (g | p).sum())
                accs.append((g & p).sum() / g.sum())
    assert r["paper_mIoU"] == pytest.approx(np.mean(ious)) and r["paper_mAcc"] == pytest.approx(np.mean(accs))


def test_invalid_inputs_raise_clear_errors():
    m = SegmentationMetrics(2)
    with pytest.raises(WpsSamError, match="shape"):
        m.update(PRED_A, GT_A[:3])
    with pytest.raises(WpsSamError, match="prediction label map holds value 5"):
        m.update(np.full((4, 4), 5, dtype=np.uint8), GT_A)
    with pytest.raises(WpsSamError, match="dtype float"):
        m.update(PRED_A.astype(np.float32), GT_A)
    with pytest.raises(WpsSamError, match="collides"):
        SegmentationMetrics(300, ignore_index=255)
    with pytest.raises(WpsSamError, match="class_names"):
        SegmentationMetrics(3, ["a"])
    assert m.num_images == 0 and m.confusion.sum() == 0


def test_markdown_and_json_report(tmp_path):
    results = {
        "SAM + GT boxes (upper bound)": metrics_over([(GT_A, GT_A), (GT_B, GT_B)]).compute(),
        "WPS-SAM (prompter)": metrics_over([(PRED_A, GT_A), (PRED_B, GT_B)]).compute(),
    }
    summary = summary_markdown(results)
    assert "mIoU (paper protocol)" in summary and "mIoU (dataset, parts)" in summary
    wps_row = next(line for line in summary.splitlines() if line.startswith("| WPS-SAM"))
    for number in ("76.67", "83.33", "57.64", "81.25", "76.67"):  # paper mIoU/mAcc, dataset mIoU/mAcc, pixel acc
        assert number in wps_row
    assert "| 100.00 |" in summary
    per_class = per_class_markdown(results["WPS-SAM (prompter)"])
    assert "| 1 | head | 77.78 | 87.50 | 77.50 | 87.50 | 2 | 8 |" in per_class
    three = metrics_over([(PRED_B, GT_B)], num_classes=3, names=["head", "tail", "wing"]).compute()
    assert "| 3 | wing | n/a | n/a | n/a | n/a | 0 | 0 |" in per_class_markdown(three)

    write_report({"3 classes": three, **results}, tmp_path / "r.md", tmp_path / "r.json")
    assert (tmp_path / "r.md").read_text() == render_markdown({"3 classes": three, **results})
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["3 classes"]["per_class"][3]["IoU"] is None  # NaN -> null
    assert loaded["WPS-SAM (prompter)"]["paper_mIoU"] == pytest.approx(2.3 / 3)
