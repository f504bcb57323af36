"""The generic-shapes world: class-agnostic masks for pre-training the tiny SAM.

Scenes of random primitives (ellipses, rectangles, triangles, polygons, stars, rings, arcs, bars)
and compositions of them: a primitive with others attached to its boundary or set inside it. Every
composition yields its *whole* mask and, when it has several pieces, the visible mask of each
*sub-shape* too, so SAM learns that a box can mean a part or a whole. It deliberately knows nothing
of the part world's object kinds or part classes: the foundation model must never see part labels.
Textures, backdrops and finishing are the part world's (render.py), so image statistics match.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from ..io_utils import atomic_write_bytes, atomic_write_text
from . import render
from .world import DEFAULT_SIZE, check_world_args, dump_json, encode_png, mask_annotation

MIN_MASK_PIXELS = 12
SHAPES_STREAM = zlib.crc32(b"generic-shapes")  # keeps this world's random streams apart from the part world's
GENERATOR_VERSION = 1


class ShapesSample(NamedTuple):
    image: np.ndarray        # HxWx3 uint8 RGB
    masks: list[np.ndarray]  # HxW bool, visible pixels, each non-empty
    is_whole: list[bool]     # True: a whole composition (or lone primitive); False: one of its sub-shapes


def _composition(rng: np.random.Generator, size: int) -> list[tuple[int, render.Shape, render.Texture]]:
    """(draw order key, shape, texture) of one composition; keys < 0 are drawn behind the anchor."""
    r = size * math.exp(rng.uniform(math.log(0.06), math.log(0.32)))  # log-uniform: many small, some large
    cx, cy = rng.uniform(0.1, 0.9, 2) * size
    anchor = render.random_primitive(rng, cx, cy, r)
    base = render.random_colour(rng)
    pieces = [(0, anchor, render.sample_texture(rng, base=base, scale=2 * r))]
    radii = [r]
    for j in range(int(rng.choice(6, p=[0.25, 0.25, 0.2, 0.15, 0.1, 0.05]))):
        colour = render.random_colour(rng) if rng.uniform() < 0.5 else render.shade(base, rng, 0.35)
        if rng.uniform() < 0.25:  # inside the anchor, drawn over it (like a window in a body)
            sub_r = r * rng.uniform(0.2, 0.45)
            sx, sy = np.array([cx, cy]) + rng.uniform(-0.4, 0.4, 2) * r
            key = j + 1
        else:  # on the outline of an earlier piece, in front or behind (like a handle, a head, a leg)
            host = int(rng.integers(len(pieces)))
            outline = pieces[host][1].outer[0]
            sx, sy = outline[int(rng.integers(len(outline)))]
            sub_r = radii[host] * rng.uniform(0.25, 0.75)
            key = (j + 1) * (1 if rng.uniform() < 0.5 else -1)
        pieces.append((key, render.random_primitive(rng, sx, sy, sub_r), render.sample_texture(rng, base=colour, scale=2 * sub_r)))
        radii.append(sub_r)
    return sorted(pieces, key=lambda piece: piece[0])


def render_shapes(seed: int, index: int, size: int = DEFAULT_SIZE) -> ShapesSample:
    """Sample `index` of the shapes world for `seed`: image, masks (wholes and sub-shapes), flags."""
    rng = np.random.default_rng([seed, SHAPES_STREAM, index])
    canvas = render.SurfaceCanvas(size)
    backdrop = render.background(rng, size)
    groups: list[list[int]] = []
    for _ in range(int(rng.integers(2, 8))):
        groups.append([canvas.paint(shape, texture) for _, shape, texture in _composition(rng, size)])
    image = render.colourise(canvas, backdrop, rng, outline_surfaces=np.ones(len(canvas.textures), dtype=bool))
    counts = np.bincount(canvas.ids.ravel(), minlength=len(canvas.textures))
    masks: list[np.ndarray] = []
    is_whole: list[bool] = []
    for surfaces in groups:
        visible = [s for s in surfaces if counts[s] >= MIN_MASK_PIXELS]
        if not visible:
            continue
        whole = np.isin(canvas.ids, surfaces)
        if len(visible) > 1 or int(whole.sum()) > counts[visible[0]]:  # a lone piece would duplicate the whole
            for s in visible:
                masks.append(canvas.ids == s)
                is_whole.append(False)
        masks.append(whole)
        is_whole.append(True)
    return ShapesSample(image, masks, is_whole)


def iter_shapes(seed: int, size: int = DEFAULT_SIZE, start: int = 0) -> Iterator[ShapesSample]:
    """Endless stream of samples start, start + 1, ... (for on-the-fly training)."""
    index = start
    while True:
        yield render_shapes(seed, index, size)
        index += 1


def write_shapes(out: str | Path, n: int, seed: int, size: int = DEFAULT_SIZE, split: str = "train") -> dict:
    """Write n samples as a class-agnostic COCO dataset (one category, "shape"; `whole` flag per mask)."""
    check_world_args(n, size, split)
    out = Path(out)
    images, annotations = [], []
    for index in range(n):
        sample = render_shapes(seed, index, size)
        file_name = f"{index:06d}.png"
        atomic_write_bytes(out / "images" / split / file_name, encode_png(sample.image))
        images.append({"id": index + 1, "file_name": file_name, "width": size, "height": size})
        for mask, whole in zip(sample.masks, sample.is_whole):
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": 1,
                                "whole": whole, **mask_annotation(mask)})
    payload = {"info": {"description": "wps-sam generic shapes world", "seed": seed, "split": split, "size": size,
                        "generator_version": GENERATOR_VERSION},
               "images": images, "annotations": annotations,
               "categories": [{"id": 1, "name": "shape", "supercategory": "shape"}]}
    path = out / "annotations" / split / f"{split}.json"
    atomic_write_text(path, dump_json(payload))
    return {"images": n, "masks": len(annotations), "json": str(path), "image_dir": str(out / "images" / split)}

