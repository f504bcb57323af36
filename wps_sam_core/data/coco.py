"""COCO-format part datasets (PartImageNet layout or explicit paths), validated once at load.

Every annotation is checked when the dataset is built, so a bad file fails at start-up with a
message naming it (or, with `skip_bad=True`, is dropped and counted per reason) instead of
crashing a DataLoader worker hours into training. Segmentations (polygons, compressed or
uncompressed RLE) are normalised to compressed RLE; masks are decoded only on demand, for
evaluation and for deriving weak labels — training needs only boxes / points and classes.

The dataset holds plain Python/numpy data and no open files, so it pickles into DataLoader
workers; images are read per item with `image_io.read_image_rgb`.
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import WpsSamError
from ..image_io import read_image_rgb
from .categories import CategoryMap
from .rle import BadSegmentation, segmentation_to_rle

log = logging.getLogger(__name__)

# Why an image or annotation may be dropped under skip_bad (keys of CocoPartDataset.skip_counts).
SKIP_REASONS = (
    "bad_image_entry",       # image entry without id/file_name/height/width, or a duplicate image id
    "missing_image",         # the image file does not exist
    "missing_keys",          # annotation without id/image_id/category_id, or with neither segmentation nor bbox
    "duplicate_id",          # annotation id seen before
    "unknown_image",         # annotation's image_id is not among the images
    "unknown_category",      # annotation's category_id is not among the categories
    "bad_bbox",              # bbox not 4 finite numbers, or width/height <= 0 (or empty inside the image)
    "empty_segmentation",    # empty list, polygon with < 3 points, or a mask with no pixel
    "bad_segmentation",      # wrong structure, non-numeric coordinates, RLE size/count mismatch
)


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Read a COCO annotation file; WpsSamError naming the file if missing, corrupt or not COCO."""
    path = Path(path)
    if not path.is_file():
        raise WpsSamError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WpsSamError(f"corrupt annotation JSON {path}: {exc}") from None
    if not isinstance(data, dict):
        raise WpsSamError(f"{path}: top level must be a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise WpsSamError(f"{path}: missing or non-list '{key}'")
    return data


def decode_rles(rles: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """Compressed RLEs -> N x H x W bool masks."""
    if not rles:
        return np.zeros((0, height, width), dtype=bool)
    with warnings.catch_warnings():  # pycocotools' compiled decode trips a harmless NumPy 2 deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = mask_utils.decode(list(rles))  # H x W x N, Fortran order
    return np.ascontiguousarray(decoded.transpose(2, 0, 1)).astype(bool)


def semantic_label_map(masks: np.ndarray, class_indices: np.ndarray, num_classes: int) -> np.ndarray:
    """HxW label map (0 background, k = class index + 1) from N x H x W instance masks.

    Overlap rule: instances are painted largest-area first, so where annotations overlap the
    SMALLER one wins (a part drawn on top of a bigger one, e.g. an eye inside a head, stays
    visible); among equal areas the LATER annotation wins.
    """
    from ..segmenter import label_dtype  # one rule for the label-map dtype (uint8, uint16 past 255)

    labels = np.zeros(masks.shape[1:], dtype=label_dtype(num_classes))
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    for i in np.argsort(-areas, kind="stable"):
        labels[masks[i]] = int(class_indices[i]) + 1
    return labels


@dataclass(frozen=True, eq=False)
class PartInstances:
    """The annotated part instances of one image (no pixels loaded)."""

    image_id: int
    file_name: str
    height: int
    width: int
    num_classes: int
    annotation_ids: np.ndarray  # (N,) int64, annotation order of the JSON file
    class_indices: np.ndarray   # (N,) int64, 0-based (CategoryMap.index_of)
    boxes: np.ndarray           # (N, 4) float32 xyxy in original pixels (tight around the mask when there is one)
    rles: tuple[dict[str, Any] | None, ...]  # compressed RLE per instance; None for box-only annotations

    def __len__(self) -> int:
        return len(self.annotation_ids)

    @property
    def labels(self) -> np.ndarray:
        """(N,) model class ids / label-map values: class index + 1 (0 = background)."""
        return self.class_indices + 1

    @property
    def has_masks(self) -> bool:
        return all(rle is not None for rle in self.rles)

    @cached_property
    def masks(self) -> np.ndarray:
        """(N, H, W) bool, decoded on first access (evaluation / weak-label derivation only)."""
        for ann_id, rle in zip(self.annotation_ids, self.rles):
            if rle is None:
                raise WpsSamError(f"{self.file_name}: annotation id {int(ann_id)} has no segmentation mask")
        return decode_rles(list(self.rles), self.height, self.width)

    def semantic_labels(self) -> np.ndarray:
        """HxW label map (0 bg, k = index + 1); overlaps: smaller wins, see semantic_label_map."""
        return semantic_label_map(self.masks, self.class_indices, self.num_classes)


@dataclass(frozen=True, eq=False)
class PartSample(PartInstances):
    """One dataset item: the image (HxWx3 uint8 RGB) and its part instances."""

    image: np.ndarray


class _ImageRecord(NamedTuple):
    image_id: int
    file_name: str
    height: int
    width: int
    annotation_ids: np.ndarray
    class_indices: np.ndarray
    boxes: np.ndarray
    rles: tuple[dict[str, Any] | None, ...]


class _Skip(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _xyxy_from_coco_bbox(bbox: Any, height: int, width: int) -> np.ndarray:
    arr = np.asarray(bbox) if isinstance(bbox, (list, tuple)) else np.zeros(0)
    if arr.shape != (4,) or arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
        raise _Skip("bad_bbox", f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in arr)
    if w <= 0 or h <= 0:
        raise _Skip("bad_bbox", f"bbox has non-positive size {w} x {h}")
    box = np.array([max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)], dtype=np.float32)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise _Skip("bad_bbox", f"bbox {bbox!r} lies outside the {width}x{height} image")
    return box


class CocoPartDataset:
    """Map-style dataset of images with part annotations (usable directly by a torch DataLoader).

    `dataset[i]` -> PartSample (reads the image); `dataset.instances(i)` -> PartInstances
    (annotations only, no image read). Images with no usable annotation are left out and
    counted in `num_images_without_annotations`; bad entries raise WpsSamError, or with
    `skip_bad=True` are left out and counted per reason in `skip_counts`.
    Crowd annotations (iscrowd=1) are ignored unless `include_crowd=True`.
    """

    def __init__(
        self, annotation_file: str | Path, image_dir: str | Path, *,
        skip_bad: bool = False, include_crowd: bool = False,
    ) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.skip_bad = skip_bad
        self.skip_counts: dict[str, int] = {}
        self.num_crowd_ignored = 0
        data = load_coco_json(self.annotation_file)
        self.category_map = CategoryMap.from_coco(data["categories"], str(self.annotation_file))
        self._records = self._build_records(data, include_crowd)
        self._position = {rec.image_id: i for i, rec in enumerate(self._records)}
        if self.num_images_without_annotations:
            log.info("%s: %d images without usable annotations left out",
                     self.annotation_file, self.num_images_without_annotations)
        if self.skip_counts:
            log.warning("%s: skipped bad entries %s", self.annotation_file, self.skip_counts)

    @classmethod
    def from_root(cls, root: str | Path, split: str, **kwargs: Any) -> "CocoPartDataset":
        """PartImageNet layout: ROOT/images/<split>/<file_name>, ROOT/annotations/<split>/<split>.json."""
        root = Path(root)
        return cls(root / "annotations" / split / f"{split}.json", root / "images" / split, **kwargs)

    # ---- building -------------------------------------------------------------------------
    def _problem(self, reason: str, message: str) -> None:
        if not self.skip_bad:
            raise WpsSamError(f"{self.annotation_file}: {message}")
        self.skip_counts[reason] = self.skip_counts.get(reason, 0) + 1
        log.debug("%s: skipped (%s): %s", self.annotation_file, reason, message)

    def _build_records(self, data: dict[str, Any], include_crowd: bool) -> list[_ImageRecord]:
        images: dict[int, dict[str, Any]] = {}
        rejected_images: set[Any] = set()
        for position, entry in enumerate(data["images"]):
            image_id = entry.get("id") if isinstance(entry, dict) else None
            ok = isinstance(entry, dict) and _is_int(image_id) and isinstance(entry.get("file_name"), str) \
                and all(_is_int(entry.get(k)) and entry[k] > 0 for k in ("height", "width"))
            if not ok or image_id in images:
                what = "duplicate image id" if ok else "needs integer id, file_name and positive height/width"
                if _is_int(image_id):  # a duplicated id is ambiguous: drop every entry with it
                    rejected_images.add(image_id)
                    images.pop(image_id, None)
                self._problem("bad_image_entry", f"image entry #{position} (id {image_id!r}): {what}")
                continue
            images[image_id] = entry

        per_image: dict[int, list[tuple[int, int, np.ndarray, dict[str, Any] | None]]] = {}
        seen_ids: set[int] = set()
        for position, ann in enumerate(data["annotations"]):
            ann_id = ann.get("id") if isinstance(ann, dict) else None
            where = f"annotation id {ann_id}" if _is_int(ann_id) else f"annotation #{position}"
            try:
                if isinstance(ann, dict) and ann.get("image_id") in rejected_images:
                    continue  # its image was already counted as bad
                parsed = self._parse_annotation(ann, ann_id, images, seen_ids, include_crowd)
            except _Skip as problem:
                self._problem(problem.reason, f"{where}: {problem}")
                continue
            if parsed is not None:
                per_image.setdefault(ann["image_id"], []).append(parsed)

        records = []
        self.num_images_without_annotations = 0
        for image_id, entry in images.items():  # JSON order
            anns = per_image.get(image_id)
            if not anns:
                self.num_images_without_annotations += 1
                continue
            if not (self.image_dir / entry["file_name"]).is_file():
                self._problem("missing_image", f"image id {image_id}: image file not found: "
                                               f"{self.image_dir / entry['file_name']}")
                continue
            records.append(_ImageRecord(
                image_id, entry["file_name"], entry["height"], entry["width"],
                np.array([a[0] for a in anns], dtype=np.int64), np.array([a[1] for a in anns], dtype=np.int64),
                np.stack([a[2] for a in anns]).astype(np.float32), tuple(a[3] for a in anns),
            ))
        return records

    def _parse_annotation(self, ann: Any, ann_id: Any, images: dict[int, dict[str, Any]],
                          seen_ids: set[int], include_crowd: bool):
        if not isinstance(ann, dict) or not _is_int(ann_id) or "image_id" not in ann or "category_id" not in ann:
            raise _Skip("missing_keys", "needs integer 'id', 'image_id' and 'category_id'")
        if "segmentation" not in ann and "bbox" not in ann:
            raise _Skip("missing_keys", "has neither 'segmentation' nor 'bbox'")
        if ann_id in seen_ids:
            raise _Skip("duplicate_id", "annotation id appears twice")
        seen_ids.add(ann_id)
        image = images.get(ann["image_id"]) if _is_int(ann["image_id"]) else None
        if image is None:
            raise _Skip("unknown_image", f"unknown image_id {ann['image_id']!r}")
        if ann["category_id"] not in self.category_map:
            raise _Skip("unknown_category", f"unknown category_id {ann['category_id']!r}; "
                                            f"known: {list(self.category_map.category_ids)}")
        height, width = image["height"], image["width"]
        box = _xyxy_from_coco_bbox(ann["bbox"], height, width) if "bbox" in ann else None
        rle = None
        if "segmentation" in ann:
            try:
                rle = segmentation_to_rle(ann["segmentation"], height, width)
            except BadSegmentation as exc:
                raise _Skip(exc.reason, str(exc)) from None
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            box = np.array([x, y, x + w, y + h], dtype=np.float32)  # tight around the mask's pixels
        if ann.get("iscrowd", 0) and not include_crowd:
            self.num_crowd_ignored += 1
            return None
        return ann_id, self.category_map.index_of(ann["category_id"]), box, rle

    # ---- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    @property
    def class_names(self) -> list[str]:
        return list(self.category_map.class_names)

    @property
    def num_classes(self) -> int:
        return self.category_map.num_classes

    @property
    def image_ids(self) -> list[int]:
        return [rec.image_id for rec in self._records]

    @property
    def num_instances(self) -> int:
        return sum(len(rec.annotation_ids) for rec in self._records)

    def index_of_image_id(self, image_id: int) -> int:
        try:
            return self._position[image_id]
        except KeyError:
            raise WpsSamError(f"{self.annotation_file}: image id {image_id} is not in the dataset") from None

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._record(index).file_name

    def _record(self, index: int) -> _ImageRecord:
        if not -len(self._records) <= index < len(self._records):
            raise IndexError(f"dataset index {index} out of range (len {len(self._records)})")
        return self._records[index]

    def instances(self, index: int) -> PartInstances:
        """Annotations of item `index` without reading the image (a fresh object: masks not cached here)."""
        rec = self._record(index)
        return PartInstances(rec.image_id, rec.file_name, rec.height, rec.width, self.num_classes,
                             rec.annotation_ids, rec.class_indices, rec.boxes, rec.rles)

    def __getitem__(self, index: int) -> PartSample:
        rec = self._record(index)
        path = self.image_dir / rec.file_name
        image = read_image_rgb(path)
        if image.shape[:2] != (rec.height, rec.width):
            rotated = image.shape[:2] == (rec.width, rec.height)
            raise WpsSamError(f"{path}: image is {image.shape[1]}x{image.shape[0]} but the annotation file "
                              f"{self.annotation_file} says {rec.width}x{rec.height}"
                              + (" (image files are read with their EXIF orientation applied, as viewers show"
                                 " them)" if rotated else ""))
        return PartSample(rec.image_id, rec.file_name, rec.height, rec.width, self.num_classes,
                          rec.annotation_ids, rec.class_indices, rec.boxes, rec.rles, image)

    def summary(self) -> dict[str, Any]:
        """Counts for logs and the `dataset-info` command."""
        per_class = np.bincount(np.concatenate([r.class_indices for r in self._records] or [np.zeros(0, int)]),
                                minlength=self.num_classes)
        return {
            "annotation_file": str(self.annotation_file), "image_dir": str(self.image_dir),
            "images": len(self), "instances": self.num_instances,
            "images_without_annotations": self.num_images_without_annotations,
            "crowd_ignored": self.num_crowd_ignored, "skipped": dict(self.skip_counts),
            "instances_per_class": {n: int(c) for n, c in zip(self.class_names, per_class)},
        }
