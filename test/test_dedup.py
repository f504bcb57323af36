"""Class-aware duplicate suppression: hand cases for greedy mask NMS, Matrix-NMS and mask merging, and
the batched implementations against plain loops on random masks (hypothesis)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wps_sam_core.errors import WpsSamError
from wps_sam_core.postprocess.dedup import (
    DEDUP_METHODS, deduplicate, duplicate_groups, mask_iou_matrix, mask_nms, matrix_decay, matrix_nms, merge_into_owners,
)

BOUNDED = settings(deadline=None, database=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def row_mask(*spans: tuple[int, int], width: int = 10) -> torch.Tensor:
    """A 1 x width mask with the given [start, stop) column spans set."""
    m = torch.zeros(1, width, dtype=torch.bool)
    for a, b in spans:
        m[0, a:b] = True
    return m


def masks_of(*masks: torch.Tensor) -> torch.Tensor:
    return torch.stack(masks)


A = row_mask((0, 4))
SAME_AS_A = row_mask((0, 4))
DISJOINT = row_mask((6, 10))
BOTH = ("greedy", "matrix")
ALL = DEDUP_METHODS  # greedy, matrix, merge


def run(method: str, masks, classes, scores, dedup_iou=0.5) -> list[int]:
    return deduplicate(masks, torch.tensor(classes), torch.tensor(scores, dtype=torch.float32), dedup_iou,
                       method=method).tolist()


@pytest.mark.parametrize("method", ALL)
def test_identical_masks_of_one_class_keep_the_higher_score(method):
    assert run(method, masks_of(A, SAME_AS_A), [1, 1], [0.3, 0.9]) == [1]
    assert run(method, masks_of(A, SAME_AS_A), [1, 1], [0.9, 0.3]) == [0]


@pytest.mark.parametrize("method", ALL)
def test_identical_masks_of_two_classes_are_both_kept(method):
    assert run(method, masks_of(A, SAME_AS_A), [1, 2], [0.3, 0.9]) == [0, 1]


@pytest.mark.parametrize("method", ALL)
def test_disjoint_masks_are_both_kept(method):
    assert run(method, masks_of(A, DISJOINT), [1, 1], [0.3, 0.9]) == [0, 1]


@pytest.mark.parametrize("method", ALL)
def test_threshold_zero_keeps_everything(method):
    assert run(method, masks_of(A, SAME_AS_A, A), [1, 1, 1], [0.3, 0.9, 0.5], dedup_iou=0) == [0, 1, 2]


@pytest.mark.parametrize("method", ALL)
def test_ties_keep_the_lower_index(method):
    for _ in range(3):
        assert run(method, masks_of(A, SAME_AS_A, SAME_AS_A), [1, 1, 1], [0.5, 0.5, 0.5]) == [0]
    assert run(method, masks_of(DISJOINT, A, SAME_AS_A), [1, 1, 1], [0.5, 0.5, 0.5]) == [0, 1]


@pytest.mark.parametrize("method", ALL)
def test_threshold_is_strict(method):
    # IoU(A, B) = 2 / 6 = 1/3: suppressed above it, kept at it.
    b = row_mask((2, 6))
    assert run(method, masks_of(A, b), [1, 1], [0.9, 0.8], dedup_iou=0.3) == [0]
    assert run(method, masks_of(A, b), [1, 1], [0.9, 0.8], dedup_iou=1 / 3) == [0, 1]


def test_logits_are_binarised_at_the_mask_threshold():
    logits = torch.stack([torch.where(A, 4.0, -4.0), torch.where(SAME_AS_A, 2.0, -2.0)])
    assert mask_nms(logits, torch.tensor([1, 1]), torch.tensor([0.2, 0.8]), 0.5).tolist() == [1]
    assert mask_nms(logits, torch.tensor([1, 1]), torch.tensor([0.2, 0.8]), 0.5, mask_threshold=3.0).tolist() == [0, 1]


def test_matrix_nms_decays_by_hand():
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    decayed = matrix_nms(masks_of(A, SAME_AS_A), torch.tensor([1, 1]), scores)
    assert decayed.tolist() == pytest.approx([0.9, 0.8 * math.exp(-2.0)])       # gaussian, sigma 2, IoU 1
    linear = matrix_nms(masks_of(A, SAME_AS_A), torch.tensor([1, 1]), scores, kernel="linear")
    assert linear.tolist() == pytest.approx([0.9, 0.0])


def test_matrix_nms_compensates_a_suppressed_suppressor():
    # A > B > C by score; IoU(A, B) = IoU(B, C) = 1/3, IoU(A, C) = 0. B decays by f(1/3); C's only
    # suppressor B was itself decayed by f(1/3), so C keeps its score (like greedy, unlike Fast NMS).
    b, c = row_mask((2, 6)), row_mask((4, 8))
    classes, scores = torch.tensor([1, 1, 1]), torch.tensor([0.9, 0.8, 0.7])
    decay = matrix_decay(masks_of(A, b, c), classes, scores)
    assert decay.tolist() == pytest.approx([1.0, math.exp(-2.0 / 9), 1.0])
    for method in BOTH:
        assert run(method, masks_of(A, b, c), [1, 1, 1], [0.9, 0.8, 0.7], dedup_iou=0.3) == [0, 2]
    # merging links A - B - C into one group (single linkage), represented by A
    assert run("merge", masks_of(A, b, c), [1, 1, 1], [0.9, 0.8, 0.7], dedup_iou=0.3) == [0]


def test_merge_unites_a_whole_part_and_its_two_halves():
    # the demo's case: two queries for the halves of a part (IoU 0 with each other), a third for the whole
    left, right, whole = row_mask((0, 5)), row_mask((5, 10)), row_mask((0, 10))
    masks, classes = masks_of(left, right, whole), torch.tensor([1, 1, 1])
    scores = torch.tensor([0.9, 0.8, 0.6])
    assert run("greedy", masks, [1, 1, 1], [0.9, 0.8, 0.6], 0.4) == [0, 1]  # NMS keeps both halves (IoU 0.5 with the whole)
    owner = duplicate_groups(masks, classes, scores, 0.4)
    assert owner.tolist() == [0, 0, 0] and run("merge", masks, [1, 1, 1], [0.9, 0.8, 0.6], 0.4) == [0]
    merged = merge_into_owners(masks, owner)
    assert merged.dtype == torch.bool and torch.equal(merged[0], whole)  # the union: no pixel lost
    logits = torch.where(masks, 3.0, -3.0) + torch.arange(3.0)[:, None, None]
    assert torch.equal(merge_into_owners(logits, owner)[0], logits.max(0).values)  # elementwise max of the group
    assert torch.equal(merge_into_owners(logits, owner)[1:], logits[1:])  # non-representatives untouched
    # another class never joins, nor a disjoint mask of the class
    owner = duplicate_groups(masks_of(left, whole, right, row_mask((0, 10))), torch.tensor([1, 2, 3, 1]),
                             torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.4)
    assert owner.tolist() == [0, 1, 2, 0]


def test_empty_input_and_bad_arguments():
    empty = torch.zeros(0, 4, 4, dtype=torch.bool)
    for method in ALL:
        assert deduplicate(empty, torch.zeros(0, dtype=torch.long), torch.zeros(0), 0.5, method).tolist() == []
    assert mask_iou_matrix(empty).shape == (0, 0)
    assert duplicate_groups(empty, torch.zeros(0, dtype=torch.long), torch.zeros(0), 0.5).tolist() == []
    one = masks_of(A)
    with pytest.raises(WpsSamError, match="dedup_iou"):
        deduplicate(one, torch.tensor([1]), torch.tensor([0.5]), 1.5)
    with pytest.raises(WpsSamError, match="method"):
        deduplicate(one, torch.tensor([1]), torch.tensor([0.5]), 0.5, method="soft")
    with pytest.raises(WpsSamError, match="kernel"):
        deduplicate(one, torch.tensor([1]), torch.tensor([0.5]), 0.5, method="matrix", kernel="box")
    with pytest.raises(WpsSamError, match="classes and scores"):
        deduplicate(one, torch.tensor([1, 2]), torch.tensor([0.5]), 0.5)


# ---------------------------------------------------------------------- references: plain loops
def reference_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter, union = int(np.sum(a & b)), int(np.sum(a | b))
    return inter / union if union else 0.0


def reference_rank(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def reference_greedy(masks: np.ndarray, classes: list[int], scores: list[float], t: float) -> list[int]:
    kept: list[int] = []
    for i in reference_rank(scores):
        if all(classes[k] != classes[i] or reference_iou(masks[k], masks[i]) <= t for k in kept):
            kept.append(i)
    return sorted(kept)


def reference_decay(masks: np.ndarray, classes: list[int], scores: list[float], sigma: float = 2.0) -> list[float]:
    f = lambda x: math.exp(-sigma * x * x)  # noqa: E731
    rank = reference_rank(scores)
    above = {j: [i for i in rank[:rank.index(j)] if classes[i] == classes[j]] for j in rank}
    compensate = {i: max([reference_iou(masks[k], masks[i]) for k in above[i]], default=0.0) for i in rank}
    return [min([1.0] + [f(reference_iou(masks[i], masks[j])) / f(compensate[i]) for i in above[j]])
            for j in range(len(scores))]


@st.composite
def instances(draw):
    n = draw(st.integers(0, 7))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    bits = draw(st.lists(st.booleans(), min_size=n * h * w, max_size=n * h * w))
    masks = np.array(bits, dtype=bool).reshape(n, h, w)
    classes = draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    scores = draw(st.lists(st.sampled_from([0.1, 0.5, 0.5, 0.7, 0.9]), min_size=n, max_size=n))  # many ties
    return masks, classes, scores


THRESHOLDS = st.sampled_from([0.1, 0.25, 1 / 3, 0.5, 0.6, 2 / 3, 0.8, 1.0])


@BOUNDED
@given(instances(), THRESHOLDS)
def test_greedy_equals_the_loop_reference(inst, t):
    masks, classes, scores = inst
    got = mask_nms(torch.from_numpy(masks), torch.tensor(classes, dtype=torch.long),
                   torch.tensor(scores, dtype=torch.float32), t)
    assert got.tolist() == reference_greedy(masks, classes, scores, t)


@BOUNDED
@given(instances(), THRESHOLDS)
def test_matrix_nms_equals_the_loop_reference(inst, t):
    masks, classes, scores = inst
    args = (torch.from_numpy(masks), torch.tensor(classes, dtype=torch.long), torch.tensor(scores, dtype=torch.float64))
    decay = matrix_decay(*args).tolist()
    expected = reference_decay(masks, classes, scores)
    assert decay == pytest.approx(expected, rel=1e-12, abs=1e-12)
    floor = math.exp(-2.0 * t * t)
    kept = set(deduplicate(*args, t, method="matrix").tolist())
    decided = [j for j, d in enumerate(expected) if abs(d - floor) > 1e-9]  # skip exact-boundary ties of exp()
    assert {j for j in decided if j in kept} == {j for j in decided if expected[j] >= floor}


def reference_groups(masks: np.ndarray, classes: list[int], scores: list[float], t: float) -> list[int]:
    """Union-find over the pairs of one class with IoU > t; each component named by its best-ranked member."""
    parent = list(range(len(scores)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(scores)):
        for j in range(len(scores)):
            if classes[i] == classes[j] and reference_iou(masks[i], masks[j]) > t:
                parent[find(i)] = find(j)
    rank = reference_rank(scores)
    best = {}
    for i in rank:
        best.setdefault(find(i), i)
    return [best[find(i)] for i in range(len(scores))]


@BOUNDED
@given(instances(), THRESHOLDS)
def test_merge_groups_equal_the_union_find_reference(inst, t):
    masks, classes, scores = inst
    args = (torch.from_numpy(masks), torch.tensor(classes, dtype=torch.long), torch.tensor(scores, dtype=torch.float32))
    expected = reference_groups(masks, classes, scores, t)
    assert duplicate_groups(*args, t).tolist() == expected
    assert deduplicate(*args, t, method="merge").tolist() == sorted(set(expected))
    if len(masks):  # each representative's merged mask is its group's union; together they cover every input pixel
        merged = merge_into_owners(torch.from_numpy(masks), torch.tensor(expected)).numpy()
        for k in set(expected):
            assert np.array_equal(merged[k], masks[[j for j, o in enumerate(expected) if o == k]].any(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_result():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(25, 64, 64, generator=gen)
    logits[1::2] = logits[0:24:2] + 0.1 * torch.randn(12, 64, 64, generator=gen)  # near-duplicates
    classes = torch.randint(1, 4, (25,), generator=gen)
    scores = torch.rand(25, generator=gen)
    for method in ALL:
        cpu = deduplicate(logits, classes, scores, 0.5, method)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            gpu = deduplicate(logits.cuda(), classes.cuda(), scores.cuda(), 0.5, method)
        assert gpu.device.type == "cuda" and gpu.tolist() == cpu.tolist()
