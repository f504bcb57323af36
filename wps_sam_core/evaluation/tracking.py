"""Tracking metrics on clips with ground-truth track ids (`wps-sam world --sequence`, COCO video style):
IDF1, MOTA, ID switches, ... from py-motmetrics (`pip install motmetrics`, in the train extra).

Per clip and frame, each method gives part masks with classes; the ids they are announced under come either
from the PartTracker (one per clip, frame f stamped f / fps) or, for comparison, from the frame alone
(instance ids 1..n by score, what the node publishes with `tracking: false`). A hypothesis matches a ground-
truth part of the same class at mask IoU >= 0.5 (distance 1 - IoU); unconfirmed (track id 0) parts are not
hypotheses. Methods:
  gt_masks   the ground-truth masks themselves (per-frame ids: annotation order): the tracker alone;
  gt_boxes   SAM prompted with the ground-truth part boxes (class = the GT class): the masks of the
             upper bound, so the numbers measure the tracker on top of SAM's masks;
  prompter   the segmenter (prompter + SAM) as the node runs it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import WpsSamError
from ..postprocess.tracking import PartTracker, TrackerSettings, with_track_ids

GT_MASKS, GT_BOXES, PROMPTER = "gt_masks", "gt_boxes", "prompter"
METHODS = (GT_MASKS, GT_BOXES, PROMPTER)
METHOD_NAMES = {GT_MASKS: "GT masks (the tracker alone)", GT_BOXES: "SAM + GT boxes", PROMPTER: "WPS-SAM (prompter)"}
TRACKER, PER_FRAME = "tracker", "per_frame_ids"
MATCH_IOU = 0.5
RATES = ("idf1", "idp", "idr", "mota", "recall", "precision")  # (MOTP: motmetrics' overall value is NaN
# as soon as one clip has no match, so it is left out)
COUNTS = ("num_switches", "num_fragmentations", "mostly_tracked", "mostly_lost", "num_objects", "num_unique_objects",
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
    fa = np.stack([m.ravel() for m in a]).astype(np.float32)
    fb = np.stack([m.ravel() for m in b]).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def distances(gt: Sequence[GtPart], hyp: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """motmetrics distances: 1 - mask IoU for same-class pairs at IoU >= MATCH_IOU, NaN (no match) otherwise."""
    iou = mask_iou([g.mask for g in gt], [m for _, m in hyp])
    same = np.array([[g.class_name == c for c, _ in hyp] for g in gt], bool).reshape(iou.shape)
    return np.where(same & (iou >= MATCH_IOU), 1.0 - iou, np.nan)


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
        boxes = np.zeros((len(gt), 4))
        for i, part in enumerate(gt):
            rows, cols = np.flatnonzero(part.mask.any(1)), np.flatnonzero(part.mask.any(0))
            boxes[i] = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
        boxes = seg.transform.boxes_to_input(boxes, geometries[0].original_size)
        tokens = seg.model.teacher_box_tokens(torch.as_tensor(boxes, dtype=torch.float32, device=seg.device))
        class_ids = torch.as_tensor([seg.class_names.index(p.class_name) + 1 for p in gt], dtype=torch.long)
        out[GT_BOXES] = seg.decode_prompts(embeddings, geometries, torch.zeros(len(gt), dtype=torch.long), tokens,
                                           class_ids)[0]
    if PROMPTER in methods:
        out[PROMPTER] = seg.segment_embeddings(embeddings, geometries)[0]
    return out


def evaluate_tracking(seg, clips: Sequence[ClipFrames], methods: Sequence[str] = (GT_BOXES, PROMPTER),
                      settings: TrackerSettings | None = None, fps: float = 10.0,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every method over every clip, with the tracker's ids and with per-frame ids; motmetrics summaries."""
    import motmetrics as mm

    from ..image_io import read_image_rgb

    unknown = sorted({p.class_name for c in clips for _, gt in c.frames for p in gt} - set(seg.class_names))
    if unknown:
        raise WpsSamError(f"the clips' classes {unknown} are not the model's {seg.class_names}; evaluate with a "
                          f"prompter trained on these categories")
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        raise WpsSamError(f"unknown tracking evaluation methods {bad}; known: {list(METHODS)}")
    settings = settings or TrackerSettings()
    accumulators = {(m, s): [] for m in methods for s in (TRACKER, PER_FRAME)}
    started, frames = time.perf_counter(), 0
    for clip in clips:
        trackers = {m: PartTracker(settings) for m in methods}
        accs = {key: mm.MOTAccumulator(auto_id=True) for key in accumulators}
        for index, (path, gt) in enumerate(clip.frames):
            predictions = _frame_predictions(seg, read_image_rgb(path), gt, methods)
            for method, result in predictions.items():
                tracked = with_track_ids(result, trackers[method].update(result.instances, round(index * 1e9 / fps)))
                for scheme, shown in ((TRACKER, tracked), (PER_FRAME, result)):
                    hyp = [(i.instance_id, i.class_name, i.mask) for i in shown.instances]
                    add_frame(accs[(method, scheme)], gt, hyp)
            frames += 1
        for key, acc in accs.items():
            accumulators[key].append(acc)
        if progress:
            progress(f"clip {clip.name}: {len(clip.frames)} frames")
    results: dict[str, Any] = {}
    for (method, scheme), accs in accumulators.items():
        results.setdefault(method, {"name": METHOD_NAMES[method]})[scheme] = summarise(accs, [c.name for c in clips])
    return {"clips": len(clips), "frames": frames, "fps": fps, "match_iou": MATCH_IOU,
            "tracker": dataclasses.asdict(settings), "segmenter": dataclasses.asdict(seg.settings),
            "model": seg.description, "seconds": round(time.perf_counter() - started, 1), "methods": results}


def add_frame(acc, gt: Sequence[GtPart], hyp: Sequence[tuple[int, str, np.ndarray]]) -> None:
    """One frame into a motmetrics accumulator: GT parts vs hypotheses (id, class name, mask)."""
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


def markdown_table(report: dict[str, Any]) -> str:
    """One row per method and id scheme: IDF1, MOTA, ID switches, ... (rates in percent)."""
    lines = ["| method | ids | IDF1 | MOTA | ID switches | fragmentations | recall | precision | GT tracks |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for result in report["methods"].values():
        for scheme, label in ((TRACKER, "tracker"), (PER_FRAME, "per-frame (no tracking)")):
            r = result[scheme]
            lines.append(f"| {result['name']} | {label} | {100 * r['idf1']:.1f} | {100 * r['mota']:.1f} | "
                         f"{r['num_switches']} | {r['num_fragmentations']} | {100 * r['recall']:.1f} | "
                         f"{100 * r['precision']:.1f} | {r['num_unique_objects']} |")
    return "\n".join(lines) + "\n"
