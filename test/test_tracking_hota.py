"""HOTA / DetA / AssA (evaluation/hota.py) on hand-computed sequences, and against TrackEval where it is installed."""
from __future__ import annotations

import numpy as np
import pytest

from wps_sam_core.evaluation.hota import ALPHAS, HotaFrame, hota, sequence_counts


def one_part(pred_ids, similarity: float = 1.0) -> list[HotaFrame]:
    """One GT part (id 7) in every frame, predicted under `pred_ids` (one per frame) at `similarity`."""
    return [HotaFrame([7], [p], np.array([[similarity]])) for p in pred_ids]


def test_a_steady_exact_track_scores_one():
    r = hota([one_part([1, 1, 1, 1])])
    assert r["hota"] == r["deta"] == r["assa"] == r["loca"] == pytest.approx(1.0)


def test_an_id_switch_halves_assa_as_computed():
    # ids 1, 1, 2, 2: every frame is a TP (DetA 1); each TP's pair (7, 1) or (7, 2) has TPA 2, FNA 4 - 2 = 2,
    # FPA 0, so A = 2 / (2 + 2 + 0) = 1/2 for all four TPs: AssA 1/2, HOTA = sqrt(1 x 1/2)
    r = hota([one_part([1, 1, 2, 2])])
    assert r["deta"] == pytest.approx(1.0)
    assert r["assa"] == pytest.approx(0.5) and r["assre"] == pytest.approx(0.5) and r["asspr"] == pytest.approx(1.0)
    assert r["hota"] == pytest.approx(np.sqrt(0.5))
    # a switch in the last frame only: A = 3 / 4 for the three frames of id 1, 1 / 4 for the last one
    late = hota([one_part([1, 1, 1, 2])])
    assert late["assa"] == pytest.approx((3 * 3 / 4 + 1 * 1 / 4) / 4)


def test_localisation_threshold_decides_which_alphas_count():
    # similarity 0.62: a TP for alpha 0.05 .. 0.60 (12 of 19 thresholds), a FN and a FP above
    r = hota([one_part([1, 1, 1], similarity=0.62)])
    tp_alphas = int(np.sum(ALPHAS <= 0.62))
    assert tp_alphas == 12
    assert r["hota"] == pytest.approx(tp_alphas / len(ALPHAS))  # sqrt(1 x 1) where matched, 0 elsewhere
    assert r["deta"] == pytest.approx(tp_alphas / len(ALPHAS))
    # LocA is the mean similarity of the TPs, 1 at an alpha without TPs (TrackEval's convention)
    assert r["loca"] == pytest.approx((tp_alphas * 0.62 + len(ALPHAS) - tp_alphas) / len(ALPHAS))
    assert r["hota_50"] == pytest.approx(1.0)


def test_misses_and_false_positives_lower_deta_only():
    frames = [HotaFrame([1, 2], [5], np.array([[1.0], [0.0]])),  # GT 2 missed
              HotaFrame([1], [5, 6], np.array([[1.0, 0.0]]))]  # prediction 6 is false
    counts = sequence_counts(frames)
    assert counts.tp.tolist() == [2] * len(ALPHAS) and counts.fn[0] == 1 and counts.fp[0] == 1
    r = hota([frames])
    # DetA = 2 / (2 + 1 + 1); AssA of pair (1, 5): TPA 2, GT 1 seen twice, id 5 seen twice -> 1
    assert r["deta"] == pytest.approx(0.5) and r["assa"] == pytest.approx(1.0)
    assert r["hota"] == pytest.approx(np.sqrt(0.5))


def test_sequences_combine_by_summing_detections():
    switched, steady = one_part([1, 1, 2, 2]), one_part([3, 3])
    r = hota([switched, steady])
    assert r["deta"] == pytest.approx(1.0)
    assert r["assa"] == pytest.approx((4 * 0.5 + 2 * 1.0) / 6)  # TP-weighted
    assert hota([[]])["hota"] == 0.0 and hota([[HotaFrame([], [], np.zeros((0, 0)))]])["deta"] == 0.0


def test_matching_prefers_the_consistent_identity():
    # two crossing parts: in the last frame both predictions overlap both GT parts exactly as well (listed in the
    # other order, so a matching on similarity alone would swap them); the matching must follow the ids that
    # agree over the sequence, so one steady prediction per GT part keeps AssA 1
    apart = HotaFrame([1, 2], [10, 20], np.array([[1.0, 0.5], [0.5, 1.0]]))
    crossing = HotaFrame([1, 2], [20, 10], np.ones((2, 2)))
    r = hota([[apart] * 3 + [crossing]])
    assert r["assa"] == pytest.approx(1.0) and r["deta"] == pytest.approx(1.0)


def random_sequence(rng: np.random.Generator, frames: int = 12) -> list[HotaFrame]:
    out = []
    for _ in range(frames):
        gt = rng.choice(6, size=rng.integers(0, 5), replace=False) + 1
        pred = rng.choice(8, size=rng.integers(0, 6), replace=False) + 100
        sim = rng.uniform(0, 1, (len(gt), len(pred))) * (rng.uniform(size=(len(gt), len(pred))) < 0.5)
        out.append(HotaFrame(gt.tolist(), pred.tolist(), sim))
    return out


def trackeval_data(frames: list[HotaFrame]) -> dict:
    """One sequence as TrackEval's metrics read it: ids renumbered 0..n-1 per sequence, per-frame similarity."""
    gt_all = sorted({i for f in frames for i in f.gt_ids})
    pred_all = sorted({i for f in frames for i in f.pred_ids})
    return {"num_gt_ids": len(gt_all), "num_tracker_ids": len(pred_all),
            "num_gt_dets": sum(len(f.gt_ids) for f in frames),
            "num_tracker_dets": sum(len(f.pred_ids) for f in frames),
            "gt_ids": [np.searchsorted(gt_all, f.gt_ids).astype(int) for f in frames],
            "tracker_ids": [np.searchsorted(pred_all, f.pred_ids).astype(int) for f in frames],
            "similarity_scores": [f.similarity for f in frames]}


def test_agrees_with_trackeval():
    trackeval = pytest.importorskip(
        "trackeval", reason="trackeval not installed (not a dependency: its wheel requires opencv-python, which "
                            "clashes with our opencv-python-headless); pip install trackeval to run this cross-check")
    rng = np.random.default_rng(0)
    sequences = [random_sequence(rng) for _ in range(4)]
    metric, per_sequence = trackeval.metrics.HOTA(), {}
    for index, frames in enumerate(sequences):
        per_sequence[index] = metric.eval_sequence(trackeval_data(frames))
    theirs = metric.combine_sequences(per_sequence)
    ours = hota(sequences)
    for ours_key, their_key in (("hota", "HOTA"), ("deta", "DetA"), ("assa", "AssA"), ("loca", "LocA"),
                                ("detre", "DetRe"), ("asspr", "AssPr")):
        assert ours[ours_key] == pytest.approx(float(np.mean(theirs[their_key])), abs=1e-12), ours_key


def test_idf1_of_motmetrics_agrees_with_trackeval():
    trackeval = pytest.importorskip("trackeval", reason="trackeval not installed (see test_agrees_with_trackeval)")
    mm = pytest.importorskip("motmetrics", reason="py-motmetrics (pip, train extra) not installed")
    from wps_sam_core.evaluation.tracking import summarise

    rng = np.random.default_rng(1)
    for frames in (random_sequence(rng, 20) for _ in range(3)):
        acc = mm.MOTAccumulator(auto_id=True)
        for f in frames:  # the same matches at IoU >= 0.5 as our evaluation gives motmetrics
            acc.update(list(f.gt_ids), list(f.pred_ids), np.where(f.similarity >= 0.5, 1 - f.similarity, np.nan))
        theirs = trackeval.metrics.Identity().eval_sequence(trackeval_data(frames))
        ours = summarise([acc], ["clip"])
        assert ours["idf1"] == pytest.approx(float(theirs["IDF1"]), abs=1e-6)
        assert (ours["idtp"], ours["idfp"], ours["idfn"]) == (theirs["IDTP"], theirs["IDFP"], theirs["IDFN"])
