"""Convert Pascal-Part style part label PNGs into the COCO part format CocoPartDataset reads.

Input: one label PNG per image (`<stem>.png`, single-channel or palette-indexed; pixel value
k = part class k, 0 = background, 255 = ignore), the images (`<stem>.<jpg|png|...>`), and a
class list. Output (PartImageNet layout): ROOT/annotations/<split>/<split>.json and, unless
images_mode="none", ROOT/images/<split>/<file_name>. Every class region is split into
8-connected components; each component becomes one annotation (compressed RLE, bbox, area,
iscrowd=0). Every file is written atomically.

Class list: JSON (a list of names -> class 1..C, or an object {"k": "name"}) or text (one name
per line, blank lines and '#' comments skipped, class 1..C in order). A leading entry named
"background" (or "_background_", "__background__") is class 0 and not a part class.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from ..errors import WpsSamError
from ..image_io import EXIF_ORIENTATION_TAG
from ..io_utils import atomic_path, atomic_write_text
from .categories import CategoryMap

log = logging.getLogger(__name__)

BACKGROUND_VALUE = 0
IGNORE_VALUE = 255
BACKGROUND_NAMES = ("background", "_background_", "__background__")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IMAGES_MODES = ("copy", "symlink", "none")


@dataclass
class ConversionReport:
    annotation_file: Path
    image_dir: Path
    num_images: int = 0
    num_annotations: int = 0
    skip_counts: dict[str, int] = field(default_factory=dict)
    instances_per_class: dict[str, int] = field(default_factory=dict)


def _numbered(names: list[Any]) -> dict[int, Any]:
    """Class k = the k-th name (1-based); a leading background entry takes value 0 and is dropped."""
    first = 0 if names and str(names[0]).lower() in BACKGROUND_NAMES else 1
    pairs = dict(enumerate(names, start=first))
    pairs.pop(BACKGROUND_VALUE, None)
    return pairs


def read_class_list(path: str | Path) -> CategoryMap:
    """Part classes from a JSON or text class list (see module docstring); label value = category id."""
    path = Path(path)
    if not path.is_file():
        raise WpsSamError(f"class list not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WpsSamError(f"corrupt class list JSON {path}: {exc}") from None
        if isinstance(data, list):
            pairs = _numbered(data)
        elif isinstance(data, dict):
            try:
                pairs = {int(k): v for k, v in data.items()}
            except ValueError:
                raise WpsSamError(f"{path}: class list object keys must be integer label values") from None
            pairs.pop(BACKGROUND_VALUE, None)
        else:
            raise WpsSamError(f"{path}: class list must be a JSON list or object")
    else:
        lines = (line.strip() for line in text.splitlines())
        pairs = _numbered([line for line in lines if line and not line.startswith("#")])
    bad = {k: v for k, v in pairs.items() if not isinstance(v, str) or not v or not 0 < k < IGNORE_VALUE}
    if bad or not pairs:
        raise WpsSamError(f"{path}: class names must be non-empty strings for values 1..254, got {bad or 'none'}")
    return CategoryMap.from_coco([{"id": k, "name": v} for k, v in pairs.items()], str(path))


def read_label_png(path: Path) -> np.ndarray:
    """HxW integer label values (palette PNGs give their indices, not colours)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise WpsSamError(f"label PNG {path} is {image.mode}; need single-channel or palette values")
            return np.array(image).astype(np.int64)
    except (UnidentifiedImageError, OSError) as exc:
        raise WpsSamError(f"cannot read label PNG {path}: {exc}") from None


def _find_image(images_dir: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (images_dir / f"{stem}{suffix}", images_dir / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only, as viewers show the image (EXIF orientation applied, as
    image_io.read_image_rgb reads it)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = image.getexif().get(EXIF_ORIENTATION_TAG, 1) in (5, 6, 7, 8)
    except (UnidentifiedImageError, OSError) as exc:
        raise WpsSamError(f"cannot read image {path}: {exc}") from None
    return (height, width) if turned else (width, height)


def label_components(labels: np.ndarray, class_value: int, min_area: int = 1) -> list[np.ndarray]:
    """8-connected components (HxW bool each, raster order) of one class value, >= min_area pixels."""
    count, components = cv2.connectedComponents((labels == class_value).astype(np.uint8), connectivity=8)
    masks = [components == j for j in range(1, count)]
    return [m for m in masks if int(m.sum()) >= min_area]


def _place_image(source: Path, target: Path, mode: str) -> None:
    if mode == "copy":
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    elif mode == "symlink":
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.link.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(source.resolve(), tmp)
        os.replace(tmp, target)  # atomic: the name points at the old file or the new link


def _annotations_for(labels: np.ndarray, categories: CategoryMap, image_id: int, first_id: int,
                     min_area: int) -> list[dict[str, Any]]:
    annotations = []
    for class_value in categories.category_ids:
        for mask in label_components(labels, class_value, min_area):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({
                "id": first_id + len(annotations), "image_id": image_id, "category_id": class_value,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "bbox": [float(v) for v in mask_utils.toBbox(rle)], "area": float(mask_utils.area(rle)),
                "iscrowd": 0,
            })
    return annotations


def convert_pascal_part(
    images_dir: str | Path, labels_dir: str | Path, classes_file: str | Path, out_root: str | Path,
    split: str, *, images_mode: str = "copy", min_area: int = 1, skip_bad: bool = False,
) -> ConversionReport:
    """Write ROOT/annotations/<split>/<split>.json (+ images); returns counts. See module docstring."""
    images_dir, labels_dir, out_root = Path(images_dir), Path(labels_dir), Path(out_root)
    if images_mode not in IMAGES_MODES:
        raise WpsSamError(f"images_mode must be one of {IMAGES_MODES}, got {images_mode!r}")
    if not split or "/" in split or split.startswith("."):
        raise WpsSamError(f"bad split name {split!r}")
    for directory in (images_dir, labels_dir):
        if not directory.is_dir():
            raise WpsSamError(f"not a directory: {directory}")
    categories = read_class_list(classes_file)
    label_files = sorted(labels_dir.glob("*.png"))
    if not label_files:
        raise WpsSamError(f"no label PNGs in {labels_dir}")
    out_images = out_root / "images" / split if images_mode != "none" else images_dir
    report = ConversionReport(out_root / "annotations" / split / f"{split}.json", out_images)

    def problem(reason: str, message: str) -> None:
        if not skip_bad:
            raise WpsSamError(message)
        report.skip_counts[reason] = report.skip_counts.get(reason, 0) + 1
        log.warning("skipped: %s", message)

    images, annotations = [], []
    known = set(categories.category_ids) | {BACKGROUND_VALUE, IGNORE_VALUE}
    for label_path in label_files:
        image_path = _find_image(images_dir, label_path.stem)
        if image_path is None:
            problem("missing_image", f"no image for label PNG {label_path} in {images_dir}")
            continue
        try:
            labels = read_label_png(label_path)
            width, height = _image_size(image_path)
        except WpsSamError as exc:
            problem("unreadable", str(exc))
            continue
        if labels.shape != (height, width):
            problem("size_mismatch", f"label PNG {label_path} is {labels.shape[1]}x{labels.shape[0]}, "
                                     f"image {image_path} is {width}x{height}")
            continue
        unknown = sorted(set(np.unique(labels).tolist()) - known)
        if unknown:
            problem("unknown_value", f"label PNG {label_path} has values {unknown[:10]} not in the class list "
                                     f"{classes_file}")
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": image_path.name, "height": height, "width": width})
        annotations += _annotations_for(labels, categories, image_id, len(annotations) + 1, min_area)
        if images_mode != "none":
            _place_image(image_path, out_images / image_path.name, images_mode)

    coco = {"info": {"description": f"converted from Pascal-Part style labels in {labels_dir}"},
            "images": images, "annotations": annotations, "categories": categories.to_coco()}
    atomic_write_text(report.annotation_file, json.dumps(coco))
    report.num_images, report.num_annotations = len(images), len(annotations)
    per_class = {cid: 0 for cid in categories.category_ids}
    for ann in annotations:
        per_class[ann["category_id"]] += 1
    report.instances_per_class = {categories.class_names[categories.index_of(c)]: n for c, n in per_class.items()}
    return report
