"""`wps-sam track FRAMES... --out DIR`: segment an image sequence with part ids that stay with their part over
the frames (wps_sam_core.postprocess.tracking), and the tracking flags it shares with `wps-sam bag --tracking`.

Defaults are TrackerSettings()'s; the flags are named like the node parameters (track_match_iou ->
--track-match-iou). Per frame the output holds what `predict` writes, with the instance map and the JSON's
`instance_id` being track ids (0 / absent = not confirmed yet), plus `tracks.txt` in the MOTChallenge format
(frame, id, bb_left, bb_top, bb_width, bb_height, conf, -1, -1, -1; frames from 1) and `tracks.json`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from pathlib import Path

from ..errors import WpsSamError
from ..postprocess.tracking import TrackerSettings

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_FLAGS = (  # (flag, TrackerSettings field, type, metavar, help)
    ("--track-match-iou", "match_iou", float, "IOU", "least mask IoU of a part with a track's predicted mask (0, 1]"),
    ("--track-max-age", "track_max_age", int, "FRAMES", "frames a track keeps its id while its part is not seen"),
    ("--track-min-hits", "track_min_hits", int, "FRAMES",
     "frames in a row a new part must be seen before it gets an id"),
    ("--track-reset-s", "track_reset_s", float, "SECONDS",
     "a longer gap between frames resets the tracker; 0 = never"),
)


def add_tracking_args(parser: argparse.ArgumentParser, what: str = "frames", switch: bool = True) -> None:
    """The --track-* flags; `switch` adds --tracking (off by default) for commands where tracking is optional."""
    defaults = TrackerSettings()
    group = parser.add_argument_group("tracking")
    if switch:
        group.add_argument("--tracking", action="store_true",
                           help=f"instance ids become track ids, stable over the {what}; parts without a confirmed "
                                f"track are left out of the instances and the instance map")
    for flag, field, kind, metavar, text in _FLAGS:
        group.add_argument(flag, dest=field, type=kind, default=getattr(defaults, field), metavar=metavar,
                           help=f"{text} (default {getattr(defaults, field)})")


def tracker_settings_from_args(args: argparse.Namespace) -> TrackerSettings:
    """Validated: a bad value is one WpsSamError line naming the flag."""
    for flag, field, *_ in _FLAGS:  # one at a time, so the message names the flag that is wrong
        try:
            TrackerSettings(**{field: getattr(args, field)})
        except WpsSamError as exc:
            raise WpsSamError(f"{flag}: {exc}") from None
    return TrackerSettings(**{field: getattr(args, field) for _, field, *_ in _FLAGS})


# ---- wps-sam track ----------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    from .common import add_model_args

    p = sub.add_parser("track", help="segment an image sequence with part ids stable over the frames")
    p.add_argument("frames", nargs="+",
                   help="a folder of frames (its image files in natural name order: 2.png before 10.png) "
                        "or image files in frame order")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--fps", type=float, default=10.0,
                   help="frame rate: frame i is at i / fps seconds, for the motion prediction and --track-reset-s")
    p.add_argument("--batch-size", type=int, default=4)
    add_model_args(p)
    add_tracking_args(p, switch=False)
    p.set_defaults(func=run_track)

    p = sub.add_parser("track-eval", help="tracking metrics (IDF1, HOTA, MOTA, ID switches; mask and box criteria) on "
                                          "clips with GT track ids (wps-sam world --sequence)")
    p.add_argument("--data", required=True,
                   help="dataset root: ROOT/images/<split>/, ROOT/annotations/<split>/<split>.json")
    p.add_argument("--split", default="val", help="split under --data (default val)")
    p.add_argument("--json", required=True, help="report JSON (a markdown table is written next to it)")
    p.add_argument("--methods", default="gt_masks,gt_boxes,prompter",
                   help="comma-separated: gt_masks (the tracker on the GT masks), gt_boxes (SAM + GT boxes), prompter")
    p.add_argument("--max-clips", type=int, default=0, help="only the first N clips (0 = all)")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate the clips are played at (stamps)")
    add_model_args(p)
    add_tracking_args(p, switch=False)
    p.set_defaults(func=run_track_eval)


def natural_key(name: str) -> list:
    """'frame10.png' after 'frame9.png': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_paths(inputs: list[str]) -> list[Path]:
    """The frames in order: a single folder's image files by natural name order, or the files as given."""
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        folder = Path(inputs[0])
        paths = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: natural_key(p.name))
        if not paths:
            raise WpsSamError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    else:
        paths = [Path(p) for p in inputs]
        folders = [str(p) for p in paths if p.is_dir()]
        if folders:
            raise WpsSamError(f"give one folder of frames or image files, not folders among files: {folders[0]}")
    seen: dict[str, Path] = {}
    for path in paths:  # outputs are named by stem
        if path.stem in seen:
            raise WpsSamError(f"two frames would write the same outputs ({path.stem}_*): {seen[path.stem]} and {path}")
        seen[path.stem] = path
    return paths


def run_track(args: argparse.Namespace) -> int:
    from ..image_io import read_image_rgb, write_png
    from ..io_utils import atomic_write_text
    from ..postprocess.tracking import PartTracker, with_track_ids
    from ..viz import overlay
    from .common import segmenter_from_args

    if not (math.isfinite(args.fps) and args.fps > 0):
        raise WpsSamError(f"--fps must be a positive number of frames per second, got {args.fps}")
    settings = tracker_settings_from_args(args)
    paths = frame_paths(args.frames)  # before the model loads: bad inputs fail fast
    seg = segmenter_from_args(args)
    tracker = PartTracker(settings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mot_rows: list[str] = []
    tracks: dict[int, dict] = {}
    batch = max(1, args.batch_size)
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        images = [read_image_rgb(p) for p in chunk]
        for offset, (path, image, result) in enumerate(zip(chunk, images, seg.segment_batch(images))):
            index = start + offset
            stamp_ns = round(index * 1e9 / args.fps)
            tracked = with_track_ids(result, tracker.update(result.instances, stamp_ns))
            reset = tracker.reset_on_last_update
            write_png(out / f"{path.stem}_labels.png", tracked.labels, rgb=False)
            write_png(out / f"{path.stem}_tracks.png", tracked.instance_ids, rgb=False)
            write_png(out / f"{path.stem}_overlay.png",
                      overlay(image, tracked.labels, tracked.instance_ids, tracked.class_names))
            payload = {"image": str(path), "frame": index, "time_s": stamp_ns / 1e9, "model": seg.description,
                       "reset": reset.detail if reset else None, **tracked.to_json()}
            atomic_write_text(out / f"{path.stem}_parts.json", json.dumps(payload, indent=2))
            for inst in tracked.instances:
                x0, y0, x1, y1 = inst.box_xyxy
                mot_rows.append(f"{index + 1},{inst.instance_id},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},"
                                f"{inst.score:.4f},-1,-1,-1")
                track = tracks.setdefault(inst.instance_id, {"track_id": inst.instance_id, "class_name":
                                                             inst.class_name, "first_frame": index, "frames": 0})
                track.update(last_frame=index, frames=track["frames"] + 1)
            names = ", ".join(f"{i.class_name} #{i.instance_id}" for i in tracked.instances) or "no tracked parts"
            note = f" [tracker reset: {reset.detail}]" if reset else ""
            print(f"{path}: {len(tracked.instances)} of {len(result.instances)} parts tracked ({names}){note}")
    atomic_write_text(out / "tracks.txt", "".join(row + "\n" for row in mot_rows))
    summary = {"frames": [str(p) for p in paths], "fps": args.fps, "model": seg.description,
               "tracker": dataclasses.asdict(settings),
               "resets": tracker.resets, "resets_by_reason": tracker.resets_by_reason,
               "tracks": sorted(tracks.values(), key=lambda t: t["track_id"])}
    atomic_write_text(out / "tracks.json", json.dumps(summary, indent=2))
    print(f"{len(paths)} frames, {len(tracks)} tracks, {tracker.resets} tracker resets; wrote {out}")
    return 0


def run_track_eval(args: argparse.Namespace) -> int:
    from ..evaluation.tracking import METHODS, evaluate_tracking, load_clips, markdown_fn_causes, markdown_table
    from ..io_utils import atomic_write_text
    from .common import segmenter_from_args

    if not (math.isfinite(args.fps) and args.fps > 0):
        raise WpsSamError(f"--fps must be a positive number of frames per second, got {args.fps}")
    if args.max_clips < 0:
        raise WpsSamError(f"--max-clips must be >= 0 (0 = all), got {args.max_clips}")
    try:
        import motmetrics  # noqa: F401
    except ImportError:
        raise WpsSamError("tracking metrics need py-motmetrics: pip install motmetrics (or the train extra)") from None
    settings = tracker_settings_from_args(args)
    root = Path(args.data)
    clips = load_clips(root / "annotations" / args.split / f"{args.split}.json", root / "images" / args.split)
    clips = clips[:args.max_clips] if args.max_clips else clips
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise WpsSamError(f"unknown tracking evaluation methods {unknown}; known: {list(METHODS)}")
    seg = segmenter_from_args(args)  # after the cheap checks: a bad flag fails before the model loads
    report = evaluate_tracking(seg, clips, methods, settings, args.fps, progress=print)
    report["data"] = {"root": str(root), "split": args.split}
    out = Path(args.json)
    atomic_write_text(out, json.dumps(report, indent=2))
    table = markdown_table(report) + "\nMissed GT parts by cause (tracker ids):\n\n" + markdown_fn_causes(report)
    atomic_write_text(out.with_suffix(".md"), table)
    print(table + f"{report['clips']} clips, {report['frames']} frames in {report['seconds']} s; wrote {out}")
    return 0
