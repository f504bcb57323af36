"""HOTA, DetA, AssA (Luiten et al., "HOTA: A Higher Order Metric for Evaluating Multi-Object Tracking", IJCV 2021).

Written here (numpy + scipy) rather than taken from `trackeval` 1.3.0 (PyPI, MIT, TrackEval's code made numpy-2
clean): that wheel requires `opencv-python`, whose `cv2` clashes with our `opencv-python-headless` (one package
directory, two distributions; the GUI build needs libGL, absent on headless robots), plus matplotlib. The
algorithm follows the paper and TrackEval's reference implementation step for step, and test_tracking_hota.py
checks it against hand-computed cases and, where trackeval is installed, against trackeval itself.

For each localisation threshold alpha in 0.05, 0.10, ..., 0.95:
- per frame, GT and predicted detections are matched one-to-one by the Hungarian algorithm on
  similarity x global alignment (how much the two ids overlap over the whole sequence, so that pairs with a
  consistent identity are preferred); a matched pair with similarity >= alpha is a TP, the rest FN / FP;
- DetA = TP / (TP + FN + FP);
- AssA = mean over TPs c of A(c) = TPA / (TPA + FNA + FPA): TPA = TPs with c's GT id and c's predicted id,
  FNA = frames of c's GT id not in them, FPA = frames of c's predicted id not in them;
- HOTA = sqrt(DetA x AssA).
Reported values are means over the 19 alphas. Several sequences combine as TrackEval does: TP, FN, FP summed,
AssA (and AssRe, AssPr, LocA) averaged weighted by TP.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

ALPHAS = np.arange(0.05, 0.99, 0.05)  # TrackEval's 19 thresholds
_EPS = np.finfo(float).eps
FIELDS = ("hota", "deta", "assa", "detre", "detpr", "assre", "asspr", "loca")


@dataclass
class HotaFrame:
    """One frame: GT ids, predicted ids and their similarity (len(gt) x len(pred), in [0, 1]; 0 = cannot match,
    e.g. another class)."""

    gt_ids: Sequence[int]
    pred_ids: Sequence[int]
    similarity: np.ndarray


@dataclass
class HotaCounts:
    """Per-alpha sums over one or more sequences (what combines across sequences)."""

    tp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    fn: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    fp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    ass_a: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))  # sums over TPs of A(c)
    ass_re: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    ass_pr: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    loc: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))  # sums over TPs of the similarity

    def __add__(self, other: "HotaCounts") -> "HotaCounts":
        return HotaCounts(*(getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__))


def _dense(ids_per_frame: Iterable[Sequence[int]]) -> tuple[list[np.ndarray], int]:
    """Ids relabelled 0..n-1 over the sequence."""
    ids_per_frame = [np.asarray(ids, dtype=np.int64) for ids in ids_per_frame]
    unique = np.unique(np.concatenate(ids_per_frame)) if ids_per_frame else np.zeros(0, np.int64)
    return [np.searchsorted(unique, ids) for ids in ids_per_frame], len(unique)


def sequence_counts(frames: Sequence[HotaFrame]) -> HotaCounts:
    """The per-alpha sums of one sequence."""
    counts = HotaCounts()
    gts, n_gt = _dense(f.gt_ids for f in frames)
    preds, n_pred = _dense(f.pred_ids for f in frames)
    sims = [np.asarray(f.similarity, dtype=float).reshape(len(g), len(p)) for f, g, p in zip(frames, gts, preds)]
    # global alignment of every (GT id, predicted id) pair, from soft per-frame overlaps
    potential = np.zeros((n_gt, n_pred))
    gt_frames, pred_frames = np.zeros((n_gt, 1)), np.zeros((1, n_pred))
    for g, p, s in zip(gts, preds, sims):
        denominator = s.sum(0, keepdims=True) + s.sum(1, keepdims=True) - s
        soft = np.where(denominator > _EPS, s / np.maximum(denominator, _EPS), 0.0)
        potential[g[:, None], p[None, :]] += soft
        gt_frames[g] += 1
        pred_frames[0, p] += 1
    alignment = potential / np.maximum(gt_frames + pred_frames - potential, _EPS)
    pair_matches = np.zeros((len(ALPHAS), n_gt, n_pred))
    for g, p, s in zip(gts, preds, sims):
        matched = np.zeros(len(ALPHAS))
        if len(g) and len(p):
            rows, cols = linear_sum_assignment(-(alignment[g[:, None], p[None, :]] * s))
            for a, alpha in enumerate(ALPHAS):
                ok = s[rows, cols] >= alpha - _EPS
                matched[a] = ok.sum()
                counts.loc[a] += s[rows[ok], cols[ok]].sum()
                pair_matches[a, g[rows[ok]], p[cols[ok]]] += 1
        counts.tp += matched
        counts.fn += len(g) - matched
        counts.fp += len(p) - matched
    for a in range(len(ALPHAS)):
        m = pair_matches[a]
        counts.ass_a[a] = (m * m / np.maximum(1, gt_frames + pred_frames - m)).sum()
        counts.ass_re[a] = (m * m / np.maximum(1, gt_frames)).sum()
        counts.ass_pr[a] = (m * m / np.maximum(1, pred_frames)).sum()
    return counts


def hota_metrics(counts: HotaCounts) -> dict[str, float]:
    """HOTA, DetA, AssA, DetRe, DetPr, AssRe, AssPr, LocA: means over the alphas, in [0, 1]; plus HOTA at 0.5."""
    tp, fn, fp = counts.tp, counts.fn, counts.fp
    per_alpha = {
        "deta": tp / np.maximum(1, tp + fn + fp),
        "detre": tp / np.maximum(1, tp + fn),
        "detpr": tp / np.maximum(1, tp + fp),
        "assa": counts.ass_a / np.maximum(1, tp),
        "assre": counts.ass_re / np.maximum(1, tp),
        "asspr": counts.ass_pr / np.maximum(1, tp),
        "loca": np.where(tp > 0, counts.loc / np.maximum(1, tp), 1.0),
    }
    per_alpha["hota"] = np.sqrt(per_alpha["deta"] * per_alpha["assa"])
    out = {k: float(per_alpha[k].mean()) for k in FIELDS}
    out["hota_50"] = float(per_alpha["hota"][np.argmin(np.abs(ALPHAS - 0.5))])
    return out


def hota(sequences: Sequence[Sequence[HotaFrame]]) -> dict[str, float]:
    """The metrics over several sequences (TrackEval's combination)."""
    total = HotaCounts()
    for frames in sequences:
        total = total + sequence_counts(frames)
    return hota_metrics(total)
