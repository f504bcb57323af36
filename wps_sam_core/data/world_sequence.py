"""Clips of the procedural part world for tracking: objects translate, rotate, scale, occlude each other, pass
behind a foreground occluder, and leave or enter the frame; every part keeps one ground-truth track id.

A clip is planned once from its own random stream (seed, split, clip index): backdrop, clutter, objects with
their parts and textures (world.BUILDERS), and each object's motion (centre, scale and angle linear in time
between a start and an end pose). Frame f paints that plan with the poses at time f, in the same order every
frame, so a part's surface is the same from frame to frame: its track id. Parts with fewer than
MIN_PART_PIXELS visible pixels in a frame are absent from it (occluded or outside). Textures are anchored
to the image, as in the still world (a stripe pattern slides over a moving part).

Written as a COCO video dataset (the layout of YouTube-VIS / TAO / BURST annotations):
    OUT/images/<split>/<clip>/<frame>.png                 clip 0000.., frame 000000..
    OUT/annotations/<split>/<split>.json                  videos, images (video_id, frame_id), annotations
                                                          (track_id, object_track_id, segmentation RLE, ...)
The part classes and categories are the world's (PART_CLASSES), so a prompter trained on the world applies.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import WpsSamError
from ..io_utils import atomic_write_bytes, atomic_write_text
from . import render
from .world_depth import DEFAULT_DEPTH_RANGE, SequenceDepth
from .world import (
    BUILDERS, MAX_ROTATION, MIN_PART_PIXELS, OBJECT_KINDS, PART_CLASSES, _normalised, check_world_args, dump_json,
    encode_png, mask_annotation, part_categories,
)

SEQUENCE_GENERATOR_VERSION = 1  # bump when the frames a seed produces change
DEFAULT_FRAMES = 16
MAX_SPEED = 0.025  # of the image side per frame: 6.4 px at 256 px
ENTER_OR_LEAVE = 0.35  # probability that an object starts or ends (partly) outside the frame


@dataclass
class _Mover:
    """One object over the clip: its parts (local frame), textures, and start/end poses."""

    kind_index: int
    shapes: list[render.Shape]
    textures: list[render.Texture]
    part_classes: list[int]  # into PART_CLASSES
    periods: list[float | None]  # pattern period as a fraction of the object size
    local_angles: list[float | None]
    centre: tuple[np.ndarray, np.ndarray]  # start, end (pixels)
    scale: tuple[float, float]
    angle: tuple[float, float]
    flip: bool
    light: tuple[float, float]  # direction (radians), strength x scale

    def pose(self, t: float) -> tuple[np.ndarray, float, float]:
        """Centre, scale, angle at t in [0, 1] (start to end)."""
        (c0, c1), (s0, s1), (a0, a1) = self.centre, self.scale, self.angle
        return c0 + (c1 - c0) * t, s0 + (s1 - s0) * t, a0 + (a1 - a0) * t


@dataclass
class ClipPlan:
    size: int
    backdrop: np.ndarray
    background: list[tuple[render.Shape, render.Texture]]  # clutter painted below the objects
    movers: list[_Mover]
    foreground: list[tuple[render.Shape, render.Texture]]  # a static occluder painted above them
    style_seed: int  # outlines, blur and noise: one look for the whole clip


@dataclass
class SequenceFrame:
    image: np.ndarray  # HxWx3 uint8 RGB
    track_ids: np.ndarray  # HxW int32: 0 background / clutter, k = the part with clip-local track id k
    parts: dict[int, tuple[int, int]]  # visible part track id -> (class index into PART_CLASSES, object index)
    occluder: np.ndarray | None = None  # HxW bool: the foreground occluder's pixels (in front, for depth)


def clip_rng(seed: int, split: str, clip: int) -> np.random.Generator:
    """Each clip's own stream, apart from the still world's images of the same seed and split."""
    return np.random.default_rng([seed, zlib.crc32(f"{split}/sequence".encode("utf-8")), clip])


def _clutter(rng: np.random.Generator, size: int, count: int, r_range: tuple[float, float]) -> list:
    out = []
    for _ in range(count):
        r = rng.uniform(*r_range) * size
        cx, cy = rng.uniform(0, size, 2)
        out.append((render.random_primitive(rng, cx, cy, r), render.sample_texture(rng, scale=2 * r)))
    return out


def _endpoint(rng: np.random.Generator, size: int, scale: float, outside: bool) -> np.ndarray:
    """A centre inside the central area, or (outside) beyond one image edge by up to half the object."""
    point = rng.uniform(0.2, 0.8, 2) * size
    if outside:
        axis, side = int(rng.integers(2)), int(rng.integers(2))
        point[axis] = (size + scale * rng.uniform(0.15, 0.5)) if side else -scale * rng.uniform(0.15, 0.5)
    return point


def plan_clip(seed: int, clip: int, frames: int, size: int, split: str) -> ClipPlan:
    rng = clip_rng(seed, split, clip)
    backdrop = render.background(rng, size)
    background = _clutter(rng, size, int(rng.integers(0, 6)), (0.03, 0.14))
    n_objects = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    size_range = {1: (0.45, 0.85), 2: (0.35, 0.6), 3: (0.28, 0.5)}[n_objects]
    movers = []
    for _ in range(n_objects):
        kind_index = int(rng.integers(len(OBJECT_KINDS)))
        kind = OBJECT_KINDS[kind_index]
        scale0 = rng.uniform(*size_range) * size
        scale1 = scale0 * rng.uniform(0.8, 1.25)
        start = _endpoint(rng, size, scale0, rng.uniform() < ENTER_OR_LEAVE)
        end = _endpoint(rng, size, scale1, rng.uniform() < ENTER_OR_LEAVE)
        max_travel = MAX_SPEED * size * max(frames - 1, 1)
        travel = float(np.linalg.norm(end - start))
        if travel > max_travel:  # keep the speed realistic: end on the way, not beyond
            end = start + (end - start) * (max_travel / travel)
        angle0 = rng.uniform(-1, 1) * MAX_ROTATION[kind]
        angle1 = angle0 + rng.uniform(-1, 1) * min(MAX_ROTATION[kind], 0.5)
        flip = bool(rng.uniform() < 0.5)
        light = (rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.6))
        specs = _normalised(BUILDERS[kind](rng, render.random_colour(rng)))
        textures = [render.sample_texture(rng, base=spec.colour, kind=spec.texture_kind, scale=scale0)
                    for spec in specs]
        movers.append(_Mover(kind_index, [s.shape for s in specs], textures,
                             [PART_CLASSES.index(s.part_class) for s in specs], [s.period for s in specs],
                             [s.local_angle for s in specs], (start, end), (scale0, scale1), (angle0, angle1), flip,
                             light))
    foreground = _clutter(rng, size, 1, (0.06, 0.12)) if rng.uniform() < 0.5 else []
    return ClipPlan(size, backdrop, background, movers, foreground, int(rng.integers(2**31)))


def render_frame(plan: ClipPlan, t: float) -> SequenceFrame:
    """The clip at time t in [0, 1]: image and the visible parts under their track ids."""
    canvas = render.SurfaceCanvas(plan.size)
    for shape, texture in plan.background:
        canvas.paint(shape, texture)
    part_surfaces: list[tuple[int, int, int]] = []  # (surface, class index, object index), in track-id order
    for obj, mover in enumerate(plan.movers):
        centre, scale, angle = mover.pose(t)
        affine = render.similarity(scale, angle, centre[0], centre[1], mover.flip)
        direction, strength = mover.light
        light = (centre[0], centre[1], math.cos(direction), math.sin(direction), strength / scale)
        for shape, texture, class_index, period, local in zip(mover.shapes, mover.textures, mover.part_classes,
                                                             mover.periods, mover.local_angles):
            texture = replace(texture, light=light)
            if period is not None:
                texture.period = period * scale
            if local is not None:
                texture.angle = angle + (math.pi - local if mover.flip else local)
            surface = canvas.paint(shape.transformed(affine), texture)
            part_surfaces.append((surface, class_index, obj))
    first_occluder = len(canvas.textures)
    for shape, texture in plan.foreground:
        canvas.paint(shape, texture)
    is_part = np.zeros(len(canvas.textures), dtype=bool)
    is_part[[s for s, _, _ in part_surfaces]] = True
    image = render.colourise(canvas, plan.backdrop, np.random.default_rng(plan.style_seed), outline_surfaces=is_part)
    counts = np.bincount(canvas.ids.ravel(), minlength=len(canvas.textures))
    lut = np.zeros(len(canvas.textures), dtype=np.int32)
    parts = {}
    for track_id, (surface, class_index, obj) in enumerate(part_surfaces, start=1):
        if counts[surface] >= MIN_PART_PIXELS:
            lut[surface] = track_id
            parts[track_id] = (class_index, obj)
    return SequenceFrame(image, lut[canvas.ids], parts, canvas.ids >= first_occluder)


def render_clip(seed: int, clip: int, frames: int = DEFAULT_FRAMES, size: int = 256,
                split: str = "train") -> list[SequenceFrame]:
    """Frame f of `frames` is the plan at t = f / (frames - 1)."""
    plan = plan_clip(seed, clip, frames, size, split)
    return [render_frame(plan, f / max(frames - 1, 1)) for f in range(frames)]


def check_sequence_args(n: int, frames: int, size: int, split: str) -> None:
    check_world_args(n, size, split)
    if not 2 <= frames <= 10000:
        raise WpsSamError(f"--frames must be in [2, 10000] frames per clip (got {frames})")


def write_sequences(out: str | Path, n: int, frames: int, seed: int, size: int = 256, split: str = "train",
                    depth: bool = False, depth_noise: float | None = None,
                    depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE) -> dict:
    """Write n clips of `frames` frames as a COCO video dataset; returns a summary with counts and paths.
    depth (or depth_noise): also depth, K and GT 3D centres per frame (world_depth.SequenceDepth).

    Track ids are unique in the file (clip-local id k of clip c -> the k-th part track numbered over all
    clips); `object_track_id` names the object the part belongs to, likewise unique."""
    check_sequence_args(n, frames, size, split)
    out = Path(out)
    videos, images, annotations = [], [], []
    track_ids: dict[tuple[int, int], int] = {}
    object_ids: dict[tuple[int, int], int] = {}
    for clip in range(n):
        name = f"{clip:04d}"
        videos.append({"id": clip + 1, "name": name, "width": size, "height": size, "length": frames})
        plan = plan_clip(seed, clip, frames, size, split)
        clip_depth = SequenceDepth(out, split, seed, clip, plan, frames, depth_noise,
                                   depth_range) if depth or depth_noise is not None else None
        for frame_id in range(frames):  # render_clip's frames, one in memory at a time (a clip may have 10000)
            frame = render_frame(plan, frame_id / max(frames - 1, 1))
            file_name = f"{name}/{frame_id:06d}.png"
            atomic_write_bytes(out / "images" / split / file_name, encode_png(frame.image))
            image_id = len(images) + 1
            images.append({"id": image_id, "video_id": clip + 1, "frame_id": frame_id, "file_name": file_name,
                           "width": size, "height": size})
            for local, (class_index, obj) in frame.parts.items():
                track = track_ids.setdefault((clip, local), len(track_ids) + 1)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "video_id": clip + 1,
                                    "category_id": class_index + 1, "track_id": track,
                                    "object_track_id": object_ids.setdefault((clip, obj), len(object_ids) + 1),
                                    **mask_annotation(frame.track_ids == local)})
            if clip_depth is not None:
                clip_depth.add(frame_id, frame, images[-1], annotations[len(annotations) - len(frame.parts):])
    info = {"description": "wps-sam procedural part world, clips", "seed": seed, "split": split, "size": size,
            "frames": frames, "sequence_generator_version": SEQUENCE_GENERATOR_VERSION}
    payload = {"info": info, "videos": videos, "images": images, "annotations": annotations,
               "tracks": [{"id": t, "video_id": c + 1} for (c, _), t in track_ids.items()],
               "categories": part_categories()}
    path = out / "annotations" / split / f"{split}.json"
    atomic_write_text(path, dump_json(payload))
    return {"clips": n, "images": len(images), "parts": len(annotations), "tracks": len(track_ids),
            "objects": len(object_ids), "part_json": str(path), "image_dir": str(out / "images" / split)}
