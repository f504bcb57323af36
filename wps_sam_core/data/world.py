"""The procedural part world: scenes of objects made of touching parts, written as a COCO part dataset.

Layout (the PartImageNet one that the COCO reader takes):
    OUT/images/<split>/<index>.png
    OUT/annotations/<split>/<split>.json          part instances only (categories = PART_CLASSES)
    OUT/annotations/<split>/<split>_objects.json  whole objects (categories = OBJECT_KINDS)

Each image is a pure function of (seed, split, index): the exact integer label map is painted first
(render.SurfaceCanvas) and colour is made from it, so every annotation is the set of visible pixels
of its part. Objects occlude each other; parts of one object overlap in drawing order and so share
boundaries, which is what makes part segmentation hard.
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..errors import WpsSamError
from ..io_utils import atomic_write_bytes, atomic_write_text
from . import render
from .render import Shape, bezier, ellipse, rounded_rectangle, shade, stroke
from .world_depth import DEFAULT_DEPTH_RANGE, add_depth, check_depth_noise, check_depth_range

# The one source of truth for the world's vocabulary: kind -> its part classes (in this order).
KIND_PARTS: dict[str, tuple[str, ...]] = {
    "mug": ("mug_body", "mug_handle"),
    "bottle": ("bottle_body", "bottle_cap"),
    "hammer": ("hammer_handle", "hammer_head"),
    "quadruped": ("quadruped_head", "quadruped_torso", "quadruped_leg", "quadruped_tail"),
    "car": ("car_body", "car_wheel", "car_window"),
}
OBJECT_KINDS: tuple[str, ...] = tuple(KIND_PARTS)
PART_CLASSES: tuple[str, ...] = tuple(p for parts in KIND_PARTS.values() for p in parts)
MIN_PART_PIXELS = 12  # smaller visible remnants are dropped (and count as background)
DEFAULT_SIZE = 256
GENERATOR_VERSION = 1  # bump when the images a seed produces change


@dataclass
class PartSpec:
    """One part of an object in its local frame (extent ~1, y down); drawn in list order."""
    part_class: str
    shape: Shape
    colour: np.ndarray
    texture_kind: str | None = None  # None: random
    period: float | None = None      # pattern period as a fraction of the object size
    local_angle: float | None = None  # pattern direction in the object frame


def _colour_near(rng: np.random.Generator, base: np.ndarray, distinct_prob: float, amount: float = 0.3) -> np.ndarray:
    """A part colour: often a shade of the object's colour (parts of real objects often match)."""
    return render.random_colour(rng) if rng.uniform() < distinct_prob else shade(base, rng, amount)


def _mug(rng: np.random.Generator, base: np.ndarray) -> list[PartSpec]:
    w, h = rng.uniform(0.45, 0.7), rng.uniform(0.6, 0.9)
    top = w * rng.uniform(0.85, 1.15) / 2  # tapered cups
    body = Shape([np.array([[-top, -h / 2], [top, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])])
    if rng.uniform() < 0.5:
        body = Shape([rounded_rectangle(-w / 2, -h / 2, w / 2, h / 2, rng.uniform(0.02, 0.12))])
    rx, ry, thick = rng.uniform(0.14, 0.24), rng.uniform(0.16, 0.3) * h / 0.75, rng.uniform(0.045, 0.09)
    handle = render.ring(min(w, 2 * top) / 2 - 0.03, rng.uniform(-0.12, 0.05) * h, rx, ry, thick)
    return [
        PartSpec("mug_handle", handle, _colour_near(rng, base, 0.3)),
        PartSpec("mug_body", body, base, str(rng.choice(["flat", "stripes", "hard_stripes", "band", "gradient"])),
                 rng.uniform(0.1, 0.3), math.pi / 2),
    ]


def _bottle(rng: np.random.Generator, base: np.ndarray) -> list[PartSpec]:
    w, neck = rng.uniform(0.24, 0.38), rng.uniform(0.08, 0.13)
    shoulder, neck_top = rng.uniform(-0.12, 0.08), -0.38
    taper = rng.uniform(0.1, 0.2)
    right = np.concatenate([[[w / 2, 0.5]], bezier((w / 2, shoulder), (w / 2, shoulder - taper), (neck / 2, shoulder - taper)),
                            [[neck / 2, neck_top]]])
    left = right[::-1] * [-1, 1]
    body = Shape([np.concatenate([right, left])])
    cap_w, cap_h = neck * rng.uniform(1.1, 1.6), rng.uniform(0.07, 0.12)
    cap = Shape([rounded_rectangle(-cap_w / 2, neck_top - cap_h + 0.03, cap_w / 2, neck_top + 0.03, 0.015)])
    return [
        PartSpec("bottle_body", body, base, str(rng.choice(["band", "flat", "gradient", "band"])),
                 rng.uniform(0.15, 0.35), math.pi / 2),
        PartSpec("bottle_cap", cap, _colour_near(rng, base, 0.7), str(rng.choice(["flat", "hard_stripes"])), 0.02, 0.0),
    ]


def _hammer(rng: np.random.Generator, base: np.ndarray) -> list[PartSpec]:
    width, head_y = rng.uniform(0.06, 0.1), -0.36
    handle = Shape([stroke(np.array([[0.0, 0.5], [0.0, head_y]]), np.array([width, width * rng.uniform(0.65, 0.9)]))])
    hw, hh, lift = rng.uniform(0.38, 0.55), rng.uniform(0.1, 0.16), rng.uniform(0.0, 0.08)
    head = Shape([np.array([[-hw / 2, head_y - hh / 2], [hw * 0.15, head_y - hh / 2], [hw / 2, head_y - hh / 2 - lift],
                            [hw / 2, head_y - hh / 2 - lift + hh * 0.3], [hw * 0.15, head_y + hh / 2],
                            [-hw / 2, head_y + hh / 2]])])
    grey = np.full(3, rng.uniform(60, 200))
    return [
        PartSpec("hammer_handle", handle, base, str(rng.choice(["stripes", "band", "flat", "noise"])),
                 rng.uniform(0.03, 0.3), 0.0),
        PartSpec("hammer_head", head, shade(grey, rng, 0.2) if rng.uniform() < 0.7 else _colour_near(rng, base, 1.0),
                 str(rng.choice(["flat", "gradient"]))),
    ]


def _quadruped(rng: np.random.Generator, base: np.ndarray) -> list[PartSpec]:
    rx, ry = rng.uniform(0.3, 0.4), rng.uniform(0.13, 0.2)
    leg_len, leg_w = rng.uniform(0.18, 0.32), rng.uniform(0.07, 0.11)
    fur = str(rng.choice(["flat", "noise", "noise", "gradient"]))

    def leg(x: float, colour: np.ndarray) -> PartSpec:
        knee, foot = rng.uniform(-0.08, 0.08), rng.uniform(-0.12, 0.12)
        line = np.array([[x, 0.0], [x + knee, ry + leg_len * 0.4], [x + foot, ry + leg_len]])
        return PartSpec("quadruped_leg", Shape([stroke(line, np.array([leg_w, leg_w * 0.85, leg_w * 0.7]))]), colour, fur)

    far = shade(base, rng, 0.15) * 0.8
    legs_far = [leg(-rx * rng.uniform(0.4, 0.65), far), leg(rx * rng.uniform(0.4, 0.65), far)]
    legs_near = [leg(-rx * rng.uniform(0.5, 0.75), shade(base, rng, 0.1)), leg(rx * rng.uniform(0.5, 0.75), shade(base, rng, 0.1))]
    tail_end = (-rx - rng.uniform(0.08, 0.25), rng.uniform(-0.3, 0.25))
    tail_line = bezier((-rx * 0.85, -ry * 0.3), (-rx - 0.05, -ry * rng.uniform(0.5, 2.0)), tail_end)
    tail = PartSpec("quadruped_tail", Shape([stroke(tail_line, np.linspace(rng.uniform(0.04, 0.07), 0.015, len(tail_line)))]),
                    _colour_near(rng, base, 0.15), fur)
    neck_end = np.array([rx * 0.65 + rng.uniform(0.04, 0.12), -ry - rng.uniform(0.0, 0.12)])
    neck = stroke(np.array([[rx * 0.55, -ry * 0.2], neck_end]), rng.uniform(0.12, 0.18))
    torso = PartSpec("quadruped_torso", Shape([ellipse(0, 0, rx, ry), neck]), base, fur)
    hx, hy = neck_end + [rng.uniform(0.02, 0.06), -rng.uniform(0.0, 0.04)]
    hrx, hry, tilt = rng.uniform(0.1, 0.14), rng.uniform(0.075, 0.1), rng.uniform(-0.5, 0.5)
    snout = ellipse(hx + hrx * math.cos(tilt), hy + hrx * math.sin(tilt), hrx * 0.7, hry * 0.6, tilt)
    ear = np.array([[hx - hrx * 0.5, hy - hry * 0.6], [hx - hrx * 0.1, hy - hry * 0.8],
                    [hx - hrx * rng.uniform(0.3, 0.9), hy - hry * rng.uniform(1.4, 2.2)]])
    head = PartSpec("quadruped_head", Shape([ellipse(hx, hy, hrx, hry, tilt), snout, ear]), _colour_near(rng, base, 0.3, 0.2), fur)
    return [*legs_far, tail, *legs_near, torso, head]


def _car(rng: np.random.Generator, base: np.ndarray) -> list[PartSpec]:
    low_top, low_bottom = -0.05, rng.uniform(0.1, 0.17)
    lower = rounded_rectangle(-0.5, low_top, 0.5, low_bottom, rng.uniform(0.03, 0.07))
    cab_top = low_top - rng.uniform(0.14, 0.22)
    rear_b, front_b = -rng.uniform(0.3, 0.44), rng.uniform(0.12, 0.3)
    rear_t, front_t = rear_b + rng.uniform(0.02, 0.1), front_b - rng.uniform(0.08, 0.16)
    cabin = np.array([[rear_b, low_top + 0.01], [rear_t, cab_top], [front_t, cab_top], [front_b, low_top + 0.01]])
    body = PartSpec("car_body", Shape([lower, cabin]), base, str(rng.choice(["flat", "gradient", "flat"])))
    # windows: the cabin inset by a margin, optionally split by a pillar
    m = rng.uniform(0.018, 0.03)
    wy0, wy1 = cab_top + m, low_top - m * 0.3

    def side(x_bottom: float, x_top: float, y: float) -> float:
        return x_bottom + (x_top - x_bottom) * (low_top + 0.01 - y) / (low_top + 0.01 - cab_top)

    xl0, xl1 = side(rear_b, rear_t, wy1) + m, side(rear_b, rear_t, wy0) + m
    xr0, xr1 = side(front_b, front_t, wy1) - m, side(front_b, front_t, wy0) - m
    glass = np.clip(np.array([rng.uniform(120, 200), rng.uniform(170, 230), rng.uniform(200, 250)]) * rng.uniform(0.3, 1.0), 0, 255)
    spans = [(0.0, 1.0)]
    if rng.uniform() < 0.6:
        split, gap = rng.uniform(0.4, 0.6), 0.03 / max(xr0 - xl0, 0.05)
        spans = [(0.0, split - gap / 2), (split + gap / 2, 1.0)]
    windows = []
    for a, b in spans:
        quad = np.array([[xl0 + a * (xr0 - xl0), wy1], [xl1 + a * (xr1 - xl1), wy0],
                         [xl1 + b * (xr1 - xl1), wy0], [xl0 + b * (xr0 - xl0), wy1]])
        windows.append(PartSpec("car_window", Shape([quad]), glass, "gradient"))
    r = rng.uniform(0.085, 0.12)
    tyre = np.full(3, rng.uniform(15, 60))
    wheels = [PartSpec("car_wheel", Shape([ellipse(x, low_bottom - r * rng.uniform(0.1, 0.4), r, r)]), tyre, "radial",
                       r * rng.uniform(0.4, 0.7))
              for x in (-rng.uniform(0.26, 0.34), rng.uniform(0.26, 0.34))]
    return [body, *windows, *wheels]


BUILDERS: dict[str, Callable[[np.random.Generator, np.ndarray], list[PartSpec]]] = {
    "mug": _mug, "bottle": _bottle, "hammer": _hammer, "quadruped": _quadruped, "car": _car,
}
MAX_ROTATION = {"mug": 0.5, "bottle": math.pi, "hammer": math.pi, "quadruped": 0.3, "car": 0.25}  # radians


@dataclass
class ScenePart:
    """A part drawn in a Scene: its class, the object it belongs to, its visible pixels."""

    class_index: int   # into PART_CLASSES
    object_index: int  # into Scene.objects
    area: int


@dataclass
class ObjectInstance:
    kind_index: int    # into OBJECT_KINDS
    amodal_area: int   # pixels it covered right after being drawn (before later objects occluded it)
    visible_area: int  # pixels of its kept parts in the final image
    occluded_by_objects: int  # of its amodal pixels, those now showing parts of later objects


@dataclass
class Scene:
    image: np.ndarray     # HxWx3 uint8 RGB
    part_ids: np.ndarray  # HxW int32: 0 background, k = parts[k - 1] (visible pixels only)
    parts: list[ScenePart]
    objects: list[ObjectInstance]
    occluder: np.ndarray | None = None  # HxW bool: the foreground occluder's pixels (in front, for depth)

    def part_labels(self) -> np.ndarray:
        """HxW uint8 class map: 0 background, k = PART_CLASSES[k - 1]."""
        lut = np.array([0] + [p.class_index + 1 for p in self.parts], dtype=np.uint8)
        return lut[self.part_ids]

    def object_mask(self, object_index: int) -> np.ndarray:
        """HxW bool: the visible (kept) part pixels of one object."""
        lut = np.array([False] + [p.object_index == object_index for p in self.parts])
        return lut[self.part_ids]


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Each image's own stream: image i does not depend on n, and splits never share images."""
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8")), index])


def _normalised(parts: list[PartSpec]) -> list[PartSpec]:
    """Centre the object at the origin with its larger extent = 1, so scale means size in pixels."""
    points = np.concatenate([p for spec in parts for p in spec.shape.outer])
    lo, hi = points.min(axis=0), points.max(axis=0)
    affine = np.array([[1.0, 0.0, -(lo[0] + hi[0]) / 2], [0.0, 1.0, -(lo[1] + hi[1]) / 2]]) / max(hi - lo)
    for spec in parts:
        spec.shape = spec.shape.transformed(affine)
    return parts


def _paint_clutter(rng: np.random.Generator, canvas: render.SurfaceCanvas, count: int, r_range: tuple[float, float]) -> None:
    for _ in range(count):
        r = rng.uniform(*r_range) * canvas.size
        cx, cy = rng.uniform(0, canvas.size, 2)
        canvas.paint(render.random_primitive(rng, cx, cy, r), render.sample_texture(rng, scale=2 * r))


def render_scene(seed: int, index: int, size: int = DEFAULT_SIZE, split: str = "train") -> Scene:
    """The scene for (seed, split, index): image, exact visible-part instance map, parts and objects."""
    rng = scene_rng(seed, split, index)
    canvas = render.SurfaceCanvas(size)
    backdrop = render.background(rng, size)
    _paint_clutter(rng, canvas, int(rng.integers(0, 6)), (0.03, 0.14))
    surface_part: dict[int, tuple[int, int]] = {}  # surface id -> (class index, object index)
    n_objects = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    size_range = {1: (0.45, 0.85), 2: (0.35, 0.6), 3: (0.28, 0.5)}[n_objects]
    centres: list[np.ndarray] = []
    amodal: list[np.ndarray] = []
    kinds: list[int] = []
    for obj in range(n_objects):
        kind_index = int(rng.integers(len(OBJECT_KINDS)))
        kind = OBJECT_KINDS[kind_index]
        scale = rng.uniform(*size_range) * size
        if centres and rng.uniform() < 0.5:  # next to an earlier object, so objects overlap
            centre = centres[int(rng.integers(len(centres)))] + rng.uniform(-0.5, 0.5, 2) * scale
        else:
            centre = rng.uniform(0.2, 0.8, 2) * size
        centres.append(centre)
        angle, flip = rng.uniform(-1, 1) * MAX_ROTATION[kind], bool(rng.uniform() < 0.5)
        affine = render.similarity(scale, angle, centre[0], centre[1], flip)
        light_dir = rng.uniform(0, 2 * math.pi)
        light = (centre[0], centre[1], math.cos(light_dir), math.sin(light_dir), rng.uniform(0.0, 0.6) / scale)
        surfaces = []
        for spec in _normalised(BUILDERS[kind](rng, render.random_colour(rng))):
            texture = render.sample_texture(rng, base=spec.colour, kind=spec.texture_kind, scale=scale)
            if spec.period is not None:
                texture.period = spec.period * scale
            if spec.local_angle is not None:
                texture.angle = angle + (math.pi - spec.local_angle if flip else spec.local_angle)
            texture.light = light
            surface = canvas.paint(spec.shape.transformed(affine), texture)
            surface_part[surface] = (PART_CLASSES.index(spec.part_class), obj)
            surfaces.append(surface)
        amodal.append(np.isin(canvas.ids, surfaces))
        kinds.append(kind_index)
    first_occluder = len(canvas.textures)
    if rng.uniform() < 0.25:  # a foreground occluder that is not an object
        _paint_clutter(rng, canvas, 1, (0.04, 0.1))
    is_part = np.zeros(len(canvas.textures), dtype=bool)
    is_part[list(surface_part)] = True
    image = render.colourise(canvas, backdrop, rng, outline_surfaces=is_part)
    scene = _scene_from_canvas(image, canvas.ids, len(canvas.textures), surface_part, kinds, amodal)
    scene.occluder = canvas.ids >= first_occluder
    return scene


def _scene_from_canvas(image: np.ndarray, ids: np.ndarray, n_surfaces: int, surface_part: dict[int, tuple[int, int]],
                       kinds: list[int], amodal: list[np.ndarray]) -> Scene:
    """Turn surface ids into part instances, dropping parts with too few visible pixels."""
    counts = np.bincount(ids.ravel(), minlength=n_surfaces)
    lut = np.zeros(len(counts), dtype=np.int32)
    parts: list[ScenePart] = []
    for surface in sorted(surface_part):
        if counts[surface] >= MIN_PART_PIXELS:
            class_index, obj = surface_part[surface]
            parts.append(ScenePart(class_index, obj, int(counts[surface])))
            lut[surface] = len(parts)
    owner = np.zeros(n_surfaces, dtype=np.int32)  # surface -> object index + 1 (0: not a part)
    for surface, (_, obj) in surface_part.items():
        owner[surface] = obj + 1
    owners = owner[ids]
    objects = [ObjectInstance(k, int(mask.sum()), sum(p.area for p in parts if p.object_index == i),
                              int((mask & (owners > 0) & (owners != i + 1)).sum()))
               for i, (k, mask) in enumerate(zip(kinds, amodal))]
    return Scene(image, lut[ids], parts, objects)


# ----------------------------------------------------------------------------- dataset files
def mask_annotation(mask: np.ndarray) -> dict:
    """COCO fields of a bool mask: RLE (counts as str), integer area and bbox [x, y, w, h]."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x0, y0 = int(cols[0]), int(rows[0])
    return {
        "segmentation": {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode("ascii")},
        "area": int(mask.sum()), "bbox": [x0, y0, int(cols[-1]) - x0 + 1, int(rows[-1]) - y0 + 1], "iscrowd": 0,
    }


def dump_json(payload: dict) -> str:
    """Canonical JSON (sorted keys, no floats needed): identical input -> identical bytes."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def encode_png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    if not ok:
        raise WpsSamError("could not encode a generated image as PNG")
    return encoded.tobytes()


def check_world_args(n: int, size: int, split: str) -> None:
    if n < 1:
        raise WpsSamError(f"--n must be at least 1 (got {n})")
    if size < 64:
        raise WpsSamError(f"--size must be at least 64 pixels (got {size})")
    if not split or not split.replace("_", "").replace("-", "").isalnum():
        raise WpsSamError(f"--split must be a plain name like 'train' or 'val' (got {split!r})")


def part_categories() -> list[dict]:
    """The COCO categories of the part classes: label k = PART_CLASSES[k - 1], supercategory = its object kind."""
    kind_of = {p: kind for kind, parts in KIND_PARTS.items() for p in parts}
    return [{"id": i + 1, "name": c, "supercategory": kind_of[c]} for i, c in enumerate(PART_CLASSES)]


def write_world(out: str | Path, n: int, seed: int, size: int = DEFAULT_SIZE, split: str = "train",
                depth: bool = False, depth_noise: float | None = None,
                depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE) -> dict:
    """Write n scenes as a COCO part dataset (+ object json); returns a summary with counts and paths.
    depth (or depth_noise, a noise level): also depth images, K and GT 3D part centres (world_depth.py)."""
    check_world_args(n, size, split)
    out = Path(out)
    depth = depth or depth_noise is not None
    if depth:
        depth_range, depth_noise = check_depth_range(depth_range), check_depth_noise(depth_noise)
    images, part_anns, object_anns = [], [], []
    for index in range(n):
        scene = render_scene(seed, index, size, split)
        file_name = f"{index:06d}.png"
        atomic_write_bytes(out / "images" / split / file_name, encode_png(scene.image))
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        object_ids = {}
        for obj_index, obj in enumerate(scene.objects):
            if obj.visible_area:
                object_ids[obj_index] = len(object_anns) + 1
                object_anns.append({"id": object_ids[obj_index], "image_id": image_id, "category_id": obj.kind_index + 1,
                                    "part_ids": [], **mask_annotation(scene.object_mask(obj_index))})
        for k, part in enumerate(scene.parts, start=1):
            ann_id = len(part_anns) + 1
            part_anns.append({"id": ann_id, "image_id": image_id, "category_id": part.class_index + 1,
                              "object_id": object_ids[part.object_index], **mask_annotation(scene.part_ids == k)})
            object_anns[object_ids[part.object_index] - 1]["part_ids"].append(ann_id)
        if depth:
            add_depth(out, split, index, seed, scene, images[-1], part_anns[len(part_anns) - len(scene.parts):],
                      depth_noise, depth_range)
    info = {"description": "wps-sam procedural part world", "seed": seed, "split": split, "size": size,
            "generator_version": GENERATOR_VERSION}
    part_json = {"info": info, "images": images, "annotations": part_anns, "categories": part_categories()}
    object_json = {"info": info, "images": images, "annotations": object_anns,
                   "categories": [{"id": i + 1, "name": k, "supercategory": "object"} for i, k in enumerate(OBJECT_KINDS)]}
    ann_dir = out / "annotations" / split
    atomic_write_text(ann_dir / f"{split}.json", dump_json(part_json))
    atomic_write_text(ann_dir / f"{split}_objects.json", dump_json(object_json))
    return {"images": n, "parts": len(part_anns), "objects": len(object_anns), "part_json": str(ann_dir / f"{split}.json"),
            "object_json": str(ann_dir / f"{split}_objects.json"), "image_dir": str(out / "images" / split)}
