"""Instance metrics (PQ / SQ / RQ, COCO mask AP, duplicates per GT) against hand-computed values
on 8x8 images with one or two part instances."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wps_sam_core.errors import WpsSamError
from wps_sam_core.evaluation.instances import InstanceMetrics, greedy_match
from wps_sam_core.evaluation.report import to_jsonable

NAMES = ["head", "handle"]
H = W = 8


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


SQUARE = box(0, 4, 0, 4)         # 16 px
SQUARE_3 = box(0, 3, 0, 4)       # 12 px inside SQUARE: IoU 12/16 = 0.75
OTHER = box(4, 8, 4, 8)          # 16 px, disjoint from SQUARE


def stack(*masks: np.ndarray) -> np.ndarray:
    return np.stack(masks) if masks else np.zeros((0, H, W), dtype=bool)


def one_image(gt_masks, gt_classes, pred_masks, pred_classes, pred_scores) -> dict:
    metrics = InstanceMetrics(NAMES)
    metrics.add(1, stack(*gt_masks), np.array(gt_classes), stack(*pred_masks), np.array(pred_classes),
                np.array(pred_scores, dtype=float))
    return metrics.compute()


def row(result: dict, name: str) -> dict:
    return next(r for r in result["per_class"] if r["name"] == name)


def test_perfect_prediction_scores_one_everywhere():
    r = one_image([SQUARE, OTHER], [1, 2], [OTHER, SQUARE], [2, 1], [0.7, 0.9])
    for key in ("pq", "sq", "rq", "ap", "ap50", "ap75", "duplicates_per_gt", "fragments_per_gt"):
        assert r[key] == pytest.approx(1.0), key
    assert (r["tp"], r["fp"], r["fn"], r["matched_gt"]) == (2, 0, 0, 2)
    assert row(r, "head")["AP"] == pytest.approx(1.0) and row(r, "handle")["AP50"] == pytest.approx(1.0)


def test_one_duplicate_lowers_rq_to_two_thirds():
    # One GT, an exact prediction and a 12-px duplicate (IoU 0.75): TP 1, FP 1, FN 0.
    r = one_image([SQUARE], [1], [SQUARE, SQUARE_3], [1, 1], [0.9, 0.8])
    head = row(r, "head")
    assert (head["TP"], head["FP"], head["FN"]) == (1, 1, 0)
    assert head["RQ"] == pytest.approx(1 / (1 + 0.5))        # 2/3
    assert head["SQ"] == pytest.approx(1.0)                  # the exact mask is the match
    assert r["pq"] == pytest.approx(2 / 3) and r["rq"] == pytest.approx(2 / 3)
    assert r["duplicates_per_gt"] == pytest.approx(2.0)     # two predictions at IoU > 0.5 on one GT
    assert r["classes_counted"] == 1                         # "handle" has no TP/FP/FN: not in the mean
    assert math.isnan(row(r, "handle")["PQ"])
    # AP: the exact mask is ranked first, the duplicate after it costs no precision at recall 1.
    assert r["ap"] == pytest.approx(1.0)


def test_pq_matches_by_iou_and_ap_by_score():
    # The duplicate now outscores the exact mask. PQ still matches the exact mask (highest IoU).
    # COCO AP: at IoU thresholds 0.50..0.75 (6 of 10) the duplicate is a TP ranked first -> precision 1;
    # at 0.80..0.95 (4 of 10) it is an FP ranked first, recall 1 only at precision 1/2 -> AP 0.5.
    r = one_image([SQUARE], [1], [SQUARE, SQUARE_3], [1, 1], [0.8, 0.9])
    assert row(r, "head")["SQ"] == pytest.approx(1.0)
    assert r["ap"] == pytest.approx((6 * 1.0 + 4 * 0.5) / 10)
    assert r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(1.0)


def test_partial_mask_gives_sq_of_its_iou():
    r = one_image([SQUARE], [1], [SQUARE_3], [1], [0.9])
    assert (r["sq"], r["rq"], r["pq"]) == pytest.approx((0.75, 1.0, 0.75))


def test_a_miss_is_a_false_negative():
    # Two GT heads, one predicted exactly: TP 1, FP 0, FN 1 -> RQ 2/3, SQ 1.
    r = one_image([SQUARE, OTHER], [1, 1], [OTHER], [1], [0.9])
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 1)
    assert (r["sq"], r["rq"], r["pq"]) == pytest.approx((1.0, 2 / 3, 2 / 3))
    # Recall stops at 1/2 with precision 1: 51 of COCO's 101 recall points (0.00..0.50) score 1.
    assert r["ap"] == pytest.approx(51 / 101)
    assert r["duplicates_per_gt"] == pytest.approx(1.0) and r["matched_gt"] == 1


def test_class_confusion_is_a_miss_and_a_false_positive():
    r = one_image([SQUARE], [1], [SQUARE], [2], [0.9])
    head, handle = row(r, "head"), row(r, "handle")
    assert (head["TP"], head["FP"], head["FN"]) == (0, 0, 1)
    assert (handle["TP"], handle["FP"], handle["FN"]) == (0, 1, 0)
    assert (head["PQ"], handle["PQ"], head["SQ"]) == (0.0, 0.0, 0.0)
    assert r["classes_counted"] == 2 and r["pq"] == 0.0      # panopticapi: a predicted class counts
    assert r["ap"] == 0.0 and math.isnan(handle["AP"])        # no GT handle: its AP is undefined
    assert math.isnan(r["duplicates_per_gt"]) and r["matched_gt"] == 0


def test_duplicates_average_over_matched_gt_only():
    # Head: two predictions at IoU > 0.5; handle: one; a third GT without prediction is not averaged.
    third = box(4, 8, 0, 4)
    r = one_image([SQUARE, OTHER, third], [1, 2, 2], [SQUARE, SQUARE_3, OTHER], [1, 1, 2], [0.9, 0.8, 0.7])
    assert r["duplicates_per_gt"] == pytest.approx((2 + 1) / 2)
    assert r["matched_gt"] == 2


def test_fragments_count_pieces_that_iou_misses():
    # A painted instance map splits the head into two disjoint halves (IoU 0.5 each, not > 0.5):
    # no match, no duplicate by IoU, but two predictions lie (entirely) on the one GT.
    left, right = box(0, 4, 0, 2), box(0, 4, 2, 4)
    r = one_image([SQUARE], [1], [left, right], [1, 1], [0.9, 0.8])
    assert (r["tp"], r["fp"], r["fn"]) == (0, 2, 1)
    assert math.isnan(r["duplicates_per_gt"])
    assert r["fragments_per_gt"] == pytest.approx(2.0)


def test_counts_accumulate_over_images_and_merge_is_exact():
    whole = InstanceMetrics(NAMES)
    first, second = InstanceMetrics(NAMES), InstanceMetrics(NAMES)
    images = [("a", [SQUARE], [1], [SQUARE, SQUARE_3], [1, 1], [0.9, 0.8]),
              ("b", [OTHER], [2], [OTHER], [1], [0.6])]
    for target, (image_id, gm, gc, pm, pc, ps) in zip((first, second), images):
        for metrics in (target, whole):
            metrics.add(image_id, stack(*gm), np.array(gc), stack(*pm), np.array(pc), np.array(ps))
    merged = first.merge(second).compute()
    expected = whole.compute()
    assert json.dumps(to_jsonable(merged)) == json.dumps(to_jsonable(expected))
    # head: TP 1 (a), FP 1 (a) + 1 (b, wrong class) -> RQ 1 / 2; handle: FN 1 -> PQ 0.
    assert row(expected, "head")["RQ"] == pytest.approx(0.5)
    assert expected["pq"] == pytest.approx(0.25) and expected["num_images"] == 2


def test_result_is_json_ready():
    r = one_image([SQUARE], [1], [], [], [])
    text = json.dumps(to_jsonable(r), allow_nan=False)
    assert json.loads(text)["ap"] == 0.0 and json.loads(text)["fn"] == 1
    empty = InstanceMetrics(NAMES).compute()
    assert math.isnan(empty["pq"]) and math.isnan(empty["ap"])


def test_bad_inputs_are_refused():
    metrics = InstanceMetrics(NAMES)
    metrics.add(7, stack(SQUARE), [1], stack(), [], [])
    with pytest.raises(WpsSamError, match="already added"):
        metrics.add(7, stack(SQUARE), [1], stack(), [], [])
    with pytest.raises(WpsSamError, match="class ids must be in 1..2"):
        metrics.add(8, stack(SQUARE), [3], stack(), [], [])
    with pytest.raises(WpsSamError, match="one size"):
        metrics.add(9, stack(SQUARE), [1], np.zeros((1, 4, 4), bool), [1], [0.5])
    with pytest.raises(WpsSamError, match="scores"):
        metrics.add(10, stack(SQUARE), [1], stack(SQUARE), [1], [])


def test_greedy_match_prefers_iou_then_score():
    iou = np.array([[0.6, 0.0], [0.9, 0.7], [0.9, 0.0]])
    # pred 1 and 2 tie on GT 0 at 0.9: the higher score (pred 2) wins; pred 1 then takes GT 1.
    assert sorted(greedy_match(iou, np.array([0.1, 0.2, 0.3]))) == [(1, 1), (2, 0)]
    assert greedy_match(np.array([[0.5]]), np.array([1.0])) == []   # IoU must exceed 0.5
