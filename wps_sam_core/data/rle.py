"""COCO segmentations (polygons, compressed / uncompressed RLE) -> validated compressed RLE.

pycocotools trusts its input: an RLE whose run lengths do not add up to H*W decodes to
uninitialised memory (too short) or an error deep inside decode (too long), and a polygon
with exactly 4 numbers is silently read as a *box*. Every segmentation is therefore checked
here, once, before pycocotools sees it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


class BadSegmentation(Exception):
    """Internal: `reason` is 'empty_segmentation' or 'bad_segmentation' (see coco.SKIP_REASONS)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def compressed_rle_counts(counts: str | bytes) -> list[int]:
    """Run lengths of a COCO compressed-RLE string (the inverse of pycocotools' rleToString).

    Each count is a little-endian base-32 varint in characters '0'..'o'; from the third count
    on, counts are stored as the difference to the count two places back.
    """
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    runs: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise ValueError("truncated run length")
            char = ord(text[pos]) - 48
            if not 0 <= char < 64:
                raise ValueError(f"invalid character {text[pos]!r}")
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            pos += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift  # sign-extend
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError("negative run length")
        runs.append(value)
    return runs


def _polygons_to_rle(polygons: list[Any], height: int, width: int) -> dict[str, Any]:
    if not polygons:
        raise BadSegmentation("empty_segmentation", "empty polygon list")
    for i, polygon in enumerate(polygons):
        if not isinstance(polygon, list):
            raise BadSegmentation("bad_segmentation", "polygon segmentation must be a list of coordinate lists")
        try:
            coords = np.asarray(polygon) if polygon else np.zeros(0)
        except ValueError:  # ragged nesting
            coords = np.zeros((0, 0))
        if coords.ndim != 1 or (coords.size and coords.dtype.kind not in "iuf"):
            raise BadSegmentation("bad_segmentation", f"polygon {i} has non-numeric coordinates")
        if coords.size < 6:
            raise BadSegmentation("empty_segmentation", f"polygon {i} has {coords.size // 2} points (needs >= 3)")
        if coords.size % 2 or not np.isfinite(coords).all():
            raise BadSegmentation("bad_segmentation", f"polygon {i} needs an even number of finite coordinates")
    rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], height, width)
    return mask_utils.merge(rles) if len(rles) > 1 else rles[0]


def _rle_to_compressed(rle: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    size, counts = rle.get("size"), rle.get("counts")
    if not isinstance(size, list) or size != [height, width]:
        raise BadSegmentation("bad_segmentation", f"RLE size {size!r} does not match the image's [{height}, {width}]")
    if isinstance(counts, list):  # uncompressed
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise BadSegmentation("bad_segmentation", "uncompressed RLE counts must be non-negative integers")
        total = sum(counts)
        compressed = mask_utils.frPyObjects({"size": size, "counts": counts}, height, width) \
            if total == height * width else None
    elif isinstance(counts, (str, bytes)):
        try:
            total = sum(compressed_rle_counts(counts))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadSegmentation("bad_segmentation", f"corrupt compressed RLE counts: {exc}") from None
        compressed = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise BadSegmentation("bad_segmentation", "RLE 'counts' must be a list or a string")
    if total != height * width:
        raise BadSegmentation("bad_segmentation", f"RLE run lengths add up to {total}, not {height}*{width}")
    return compressed


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """Validated compressed RLE ({'size': [h, w], 'counts': bytes}) with at least one pixel."""
    if isinstance(segmentation, list):
        rle = _polygons_to_rle(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = _rle_to_compressed(segmentation, height, width)
    else:
        raise BadSegmentation("bad_segmentation", f"segmentation must be polygons or an RLE dict, "
                                                  f"got {type(segmentation).__name__}")
    if int(mask_utils.area(rle)) == 0:
        raise BadSegmentation("empty_segmentation", "segmentation covers no pixel of the image")
    return rle
