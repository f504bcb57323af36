"""Tracking metrics on clips with ground-truth track ids (`wps-sam world --sequence`, COCO video style):
IDF1, MOTA, ID switches, ... from py-motmetrics (`pip install motmetrics`, in the train extra) and HOTA / DetA /
AssA (evaluation/hota.py).

Per clip and frame, each method gives part masks with classes; the ids they are announced under come either
from the PartTracker (one per clip, frame f stamped f / fps) or, for comparison, from the frame alone
(instance ids 1..n by score, what the node publishes with `tracking: false`). Unconfirmed (track id 0) parts
are not hypotheses. Two match criteria, reported side by side (a shown part and a GT part of the same class):
  mask  mask IoU >= 0.5 (MOTS, Voigtlaender et al. 2019): the headline, what a robot gets;
  box   IoU >= 0.5 of the masks' bounding boxes (MOTChallenge's box protocol, on the same masks).
HOTA uses the IoU itself as the similarity (0 between classes). Methods:
  gt_masks   the ground-truth masks themselves (per-frame ids: annotation order): the tracker alone;
  gt_boxes   SAM prompted with the ground-truth part boxes (class = the GT class): the masks of the
             upper bound, so the numbers measure the tracker on top of SAM's masks;
  prompter   the segmenter (prompter + SAM) as the node runs it.
With the tracker's ids, each missed GT part is put down to one cause (`fn_causes`): no mask of the frame matches
it (`no_mask`, the segmenter's miss), a mask matches it but its track is unconfirmed in the part's first frame
(`warm_up`, the price of track_min_hits) or later (`track_restarted`: its track was lost and starts anew), or
a confirmed mask matches it but motmetrics paired them otherwise (`other`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import WpsSamError
from ..postprocess.objects import mask_bounds
from ..postprocess.tracking import NO_ID, SECOND_STAGE_BOX_IOU, PartTracker, TrackerSettings
from .hota import HotaFrame, hota
from .instances import iou_from_overlaps, pairwise_overlaps

GT_MASKS, GT_BOXES, PROMPTER = "gt_masks", "gt_boxes", "prompter"
METHODS = (GT_MASKS, GT_BOXES, PROMPTER)
METHOD_NAMES = {GT_MASKS: "GT masks (the tracker alone)", GT_BOXES: "SAM + GT boxes", PROMPTER: "WPS-SAM (prompter)"}
TRACKER, PER_FRAME = "tracker", "per_frame_ids"
MATCH_IOU = 0.5
MASK, BOX = "mask", "box"
CRITERIA = {MASK: "mask IoU >= 0.5 (MOTS)", BOX: "box IoU >= 0.5 (MOTChallenge)"}
FN_NO_MASK, FN_WARM_UP, FN_LOST, FN_OTHER = "no_mask", "warm_up", "track_restarted", "other"
FN_CAUSES = (FN_NO_MASK, FN_WARM_UP, FN_LOST)
RATES = ("idf1", "idp", "idr", "mota", "recall", "precision")  # (MOTP: motmetrics' overall value is NaN
# as soon as one clip has no match, so it is left out)
COUNTS = ("idtp", "idfp", "idfn", "num_switches", "num_fragmentations", "mostly_tracked", "mostly_lost", "num_objects", "num_unique_objects",
          "num_false_positives", "num_misses", "num_matches")
METRICS = RATES + COUNTS


@dataclass
class GtPart:
    track_id: int
    class_name: str
    mask: np.ndarray  # HxW bool


@dataclass
class ClipFrames:
    name: str
    frames: list[tuple[Path, list[GtPart]]]  # in frame order


def load_clips(annotation_file: str | Path, image_dir: str | Path) -> list[ClipFrames]:
    """The clips of a COCO video part dataset: frames in frame_id order with their parts' masks and track ids."""
    from pycocotools import mask as mask_utils

    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    try:
        doc = json.loads(annotation_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WpsSamError(f"cannot read annotations {annotation_file}: {exc}") from None
    images = doc.get("images") or []
    if not images or not all("video_id" in im and "frame_id" in im for im in images) or not all(
            "track_id" in a for a in doc.get("annotations", [])):
        raise WpsSamError(f"{annotation_file}: not a COCO video dataset (images need video_id and frame_id, "
                          f"annotations track_id); write clips with wps-sam world --sequence")
    names = {c["id"]: c["name"] for c in doc.get("categories", [])}
    videos = {v["id"]: v.get("name", str(v["id"])) for v in doc.get("videos", [])}
    parts: dict[int, list[GtPart]] = {im["id"]: [] for im in images}
    for ann in doc.get("annotations", []):
        seg = ann["segmentation"]
        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")} if isinstance(seg, dict) else None
        if rle is None:
            raise WpsSamError(f"{annotation_file}: annotation id {ann.get('id')}: expected an RLE segmentation")
        parts[ann["image_id"]].append(GtPart(int(ann["track_id"]), names[ann["category_id"]],
                                             mask_utils.decode(rle).astype(bool)))
    clips: dict[int, list] = {}
    for im in sorted(images, key=lambda im: (im["video_id"], im["frame_id"])):
        clips.setdefault(im["video_id"], []).append((image_dir / im["file_name"], parts[im["id"]]))
    return [ClipFrames(videos.get(v, str(v)), frames) for v, frames in clips.items()]


def mask_iou(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """len(a) x len(b) mask IoU."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return iou_from_overlaps(*pairwise_overlaps(np.stack(a).astype(bool), np.stack(b).astype(bool)))


def mask_box(mask: np.ndarray) -> np.ndarray:
    """The mask's bounding box x0, y0, x1, y1 in pixel edges (x1, y1 exclusive); zeros for an empty mask."""
    box = mask_bounds(mask)
    return np.zeros(4) if box is None else np.array([box.x0, box.y0, box.x1, box.y1], float)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """len(a) x len(b) IoU of xyxy boxes."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a, area_b = np.prod(a[:, 2:] - a[:, :2], 1), np.prod(b[:, 2:] - b[:, :2], 1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def similarity(gt: Sequence[GtPart], hyp: Sequence[tuple[str, np.ndarray]], criterion: str = MASK) -> np.ndarray:
    """len(gt) x len(hyp) IoU under `criterion` (mask IoU or the masks' box IoU), 0 between different classes."""
    if criterion == MASK:
        iou = mask_iou([g.mask for g in gt], [m for _, m in hyp])
    else:
        iou = box_iou(np.array([mask_box(g.mask) for g in gt]), np.array([mask_box(m) for _, m in hyp]))
    same = np.array([[g.class_name == c for c, _ in hyp] for g in gt], bool).reshape(iou.shape)
    return np.where(same, iou, 0.0)


def distances(gt: Sequence[GtPart], hyp: Sequence[tuple[str, np.ndarray]], criterion: str = MASK) -> np.ndarray:
    """motmetrics distances: 1 - IoU for same-class pairs at IoU >= MATCH_IOU, NaN (no match) otherwise."""
    return _distances(similarity(gt, hyp, criterion))


def _distances(sim: np.ndarray) -> np.ndarray:
    return np.where(sim >= MATCH_IOU, 1.0 - sim, np.nan)


def _frame_predictions(seg, image: np.ndarray, gt: list[GtPart], methods: Sequence[str]) -> dict[str, Any]:
    """Each method's PartSegmentation of one frame, on one shared image embedding."""
    import torch

    from ..segmenter import assemble

    out = {}
    if GT_MASKS in methods:
        masks = np.stack([p.mask for p in gt]) if gt else np.zeros((0, *image.shape[:2]), bool)
        class_ids = np.array([seg.class_names.index(p.class_name) + 1 for p in gt], dtype=int)
        out[GT_MASKS] = assemble(masks, class_ids, np.ones(len(gt)), np.ones(len(gt)), seg.class_names)
    if GT_BOXES not in methods and PROMPTER not in methods:
        return out
    embeddings, geometries = seg.embed([image])
    if GT_BOXES in methods:
        boxes = np.array([mask_box(part.mask) for part in gt]).reshape(-1, 4)
        boxes = seg.transform.boxes_to_input(boxes, geometries[0].original_size)
        tokens = seg.model.teacher_box_tokens(torch.as_tensor(boxes, dtype=torch.float32, device=seg.device))
        class_ids = torch.as_tensor([seg.class_names.index(p.class_name) + 1 for p in gt], dtype=torch.long)
        out[GT_BOXES] = seg.decode_prompts(embeddings, geometries, torch.zeros(len(gt), dtype=torch.long), tokens,
                                           class_ids)[0]
    if PROMPTER in methods:
        out[PROMPTER] = seg.segment_embeddings(embeddings, geometries)[0]
    return out


def _check_clips(seg, clips: Sequence[ClipFrames], methods: Sequence[str]) -> None:
    unknown = sorted({p.class_name for c in clips for _, gt in c.frames for p in gt} - set(seg.class_names))
    if unknown:
        raise WpsSamError(f"the clips' classes {unknown} are not the model's {seg.class_names}; evaluate with a "
                          f"prompter trained on these categories")
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        raise WpsSamError(f"unknown tracking evaluation methods {bad}; known: {list(METHODS)}")


def predict_clips(seg, clips: Sequence[ClipFrames], methods: Sequence[str] = (GT_BOXES, PROMPTER),
                  progress: Callable[[str], None] | None = None) -> list[list[dict[str, Any]]]:
    """Per clip, per frame: method -> PartSegmentation. The expensive part (SAM), done once for any number of
    tracker settings (`score_tracking`)."""
    from ..image_io import read_image_rgb

    _check_clips(seg, clips, methods)
    out = []
    for clip in clips:
        out.append([_frame_predictions(seg, read_image_rgb(path), gt, methods) for path, gt in clip.frames])
        if progress:
            progress(f"clip {clip.name}: {len(clip.frames)} frames")
    return out


@dataclass
class _Scored:
    """What one (method, id scheme, criterion) collects over the clips."""

    accumulators: list = field(default_factory=list)
    hota_clips: list = field(default_factory=list)
    causes: dict = field(default_factory=lambda: dict.fromkeys(FN_CAUSES, 0))


def _shown(result, track_ids: Sequence[int] | None) -> tuple[list[int], list[int]]:
    """Indices of the instances shown and the ids they are shown under: the tracker's confirmed ones (track ids)
    or, without a tracker, all of them under their per-frame instance ids."""
    if track_ids is None:
        return list(range(len(result.instances))), [i.instance_id for i in result.instances]
    keep = [k for k, t in enumerate(track_ids) if t != NO_ID]
    return keep, [int(track_ids[k]) for k in keep]


def _fn_causes(causes: dict, sim: np.ndarray, gt: Sequence[GtPart], track_ids: Sequence[int],
               seen_before: set[int]) -> None:
    """Why GT parts are not shown matched this frame (tracker ids): each GT part is paired with at most one of
    all the frame's masks (Hungarian on IoU >= MATCH_IOU, the upper bound of any id scheme); a GT part without a
    pair has no mask; one paired with a mask whose track is not confirmed is a new part in its warm-up (first
    frame of the GT track) or a part whose track was lost (its earlier track did not continue)."""
    paired = dict(_pairs(sim))
    for g, part in enumerate(gt):
        if g not in paired:
            causes[FN_NO_MASK] += 1
        elif track_ids[paired[g]] == NO_ID:
            causes[FN_WARM_UP if part.track_id not in seen_before else FN_LOST] += 1


def _pairs(sim: np.ndarray) -> list[tuple[int, int]]:
    from scipy.optimize import linear_sum_assignment

    if not sim.size:
        return []
    rows, cols = linear_sum_assignment(-np.where(sim >= MATCH_IOU, sim, 0.0))
    return [(int(r), int(c)) for r, c in zip(rows, cols) if sim[r, c] >= MATCH_IOU]


def score_tracking(clips: Sequence[ClipFrames], predictions: Sequence[Sequence[dict[str, Any]]],
                   settings: TrackerSettings | None = None, fps: float = 10.0,
                   second_stage_box_iou: float = SECOND_STAGE_BOX_IOU) -> dict[str, Any]:
    """Track the cached predictions (one PartTracker per clip and method) and score them under both criteria,
    with the tracker's ids and with per-frame ids. `second_stage_box_iou` > 1: the tracker without its box stage."""
    import motmetrics as mm

    settings = settings or TrackerSettings()
    methods = sorted({m for clip in predictions for frame in clip for m in frame}, key=METHODS.index)
    scored = {(m, s, c): _Scored() for m in methods for s in (TRACKER, PER_FRAME) for c in CRITERIA}
    for clip, clip_predictions in zip(clips, predictions):
        trackers = {m: PartTracker(settings, second_stage_box_iou) for m in methods}
        accs = {key: mm.MOTAccumulator(auto_id=True) for key in scored}
        hota_frames: dict[tuple, list[HotaFrame]] = {key: [] for key in scored}
        seen: set[int] = set()
        for index, ((_, gt), frame) in enumerate(zip(clip.frames, clip_predictions)):
            gt_ids = [p.track_id for p in gt]
            for method, result in frame.items():
                track_ids = trackers[method].update(result.instances, round(index * 1e9 / fps))
                hyp = [(i.class_name, i.mask) for i in result.instances]
                for criterion in CRITERIA:
                    sim = similarity(gt, hyp, criterion)
                    for scheme, ids in ((TRACKER, track_ids), (PER_FRAME, None)):
                        keep, shown_ids = _shown(result, ids)
                        key = (method, scheme, criterion)
                        accs[key].update(gt_ids, shown_ids, _distances(sim[:, keep]))
                        hota_frames[key].append(HotaFrame(gt_ids, shown_ids, sim[:, keep]))
                        if scheme == TRACKER:
                            _fn_causes(scored[key].causes, sim, gt, track_ids, seen)
            seen.update(gt_ids)
        for key in scored:
            scored[key].accumulators.append(accs[key])
            scored[key].hota_clips.append(hota_frames[key])
    names = [c.name for c in clips]
    results: dict[str, Any] = {}
    for (method, scheme, criterion), s in scored.items():
        summary = {**summarise(s.accumulators, names), **{k: round(v, 6) for k, v in hota(s.hota_clips).items()}}
        if scheme == TRACKER:
            summary["fn_causes"] = {**s.causes, FN_OTHER: summary["num_misses"] - sum(s.causes.values())}
        entry = results.setdefault(method, {"name": METHOD_NAMES[method]})
        if criterion == MASK:
            entry[scheme] = summary
        else:
            entry.setdefault(criterion, {})[scheme] = summary
    return {"clips": len(clips), "frames": sum(len(c.frames) for c in clips), "fps": fps, "match_iou": MATCH_IOU,
            "criteria": CRITERIA, "tracker": dataclasses.asdict(settings), "second_stage_box_iou": second_stage_box_iou,
            "methods": results}


def evaluate_tracking(seg, clips: Sequence[ClipFrames], methods: Sequence[str] = (GT_BOXES, PROMPTER),
                      settings: TrackerSettings | None = None, fps: float = 10.0,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every method over every clip, with the tracker's ids and with per-frame ids; metrics under the mask
    criterion (`methods[m][scheme]`, the headline) and the box criterion (`methods[m]["box"][scheme]`)."""
    started = time.perf_counter()
    predictions = predict_clips(seg, clips, methods, progress)
    report = score_tracking(clips, predictions, settings, fps)
    return {**report, "segmenter": dataclasses.asdict(seg.settings), "model": seg.description,
            "seconds": round(time.perf_counter() - started, 1)}


def add_frame(acc, gt: Sequence[GtPart], hyp: Sequence[tuple[int, str, np.ndarray]]) -> None:
    """One frame into a motmetrics accumulator: GT parts vs hypotheses (id, class name, mask), mask criterion."""
    acc.update([p.track_id for p in gt], [h[0] for h in hyp], distances(gt, [(h[1], h[2]) for h in hyp]))


def summarise(accumulators: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """The metrics over all clips (motmetrics' OVERALL row): rates in [0, 1], counts as integers."""
    import motmetrics as mm

    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # motmetrics logs its timings on the root logger
    try:
        summary = mm.metrics.create().compute_many(list(accumulators), metrics=list(METRICS), names=list(names),
                                                   generate_overall=True)
    finally:
        logging.disable(previous)
    row = summary.loc["OVERALL"]
    return {**{k: round(float(row[k]), 6) for k in RATES}, **{k: int(row[k]) for k in COUNTS}}


def _criterion(result: dict[str, Any], criterion: str) -> dict[str, Any]:
    """{scheme: summary} of one method under one criterion."""
    return result if criterion == MASK else result[criterion]


def markdown_table(report: dict[str, Any]) -> str:
    """One row per criterion, method and id scheme: IDF1, HOTA, DetA, AssA, MOTA, ... (rates in percent)."""
    lines = ["| match | method | ids | IDF1 | HOTA | DetA | AssA | MOTA | ID switches | IDTP / IDFP / IDFN | recall | "
             "precision |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for criterion in CRITERIA:
        for result in report["methods"].values():
            for scheme, label in ((TRACKER, "tracker"), (PER_FRAME, "per-frame (no tracking)")):
                r = _criterion(result, criterion)[scheme]
                lines.append(f"| {criterion} | {result['name']} | {label} | {100 * r['idf1']:.1f} | "
                             f"{100 * r['hota']:.1f} | {100 * r['deta']:.1f} | {100 * r['assa']:.1f} | "
                             f"{100 * r['mota']:.1f} | {r['num_switches']} | {r['idtp']} / {r['idfp']} / {r['idfn']} | "
                             f"{100 * r['recall']:.1f} | {100 * r['precision']:.1f} |")
    return "\n".join(lines) + "\n"


def markdown_fn_causes(report: dict[str, Any]) -> str:
    """Why GT parts are missed with the tracker's ids (see the module docstring), per criterion and method."""
    lines = ["| match | method | GT parts | missed | no mask matches | warm-up (track_min_hits) | track restarted | "
             "other |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for criterion in CRITERIA:
        for result in report["methods"].values():
            r = _criterion(result, criterion)[TRACKER]
            c = r["fn_causes"]
            lines.append(f"| {criterion} | {result['name']} | {r['num_objects']} | {r['num_misses']} | "
                         f"{c[FN_NO_MASK]} | {c[FN_WARM_UP]} | {c[FN_LOST]} | {c[FN_OTHER]} |")
    return "\n".join(lines) + "\n"
