"""Parts linked to their object: which object instance each part belongs to (numpy + OpenCV; no torch, no ROS).

The class-to-object table says which object class each part class belongs to ("mug_handle" -> "mug"); it
comes from the dataset (COCO `supercategory`, data/categories.py) and travels in the prompter checkpoint
(checkpoint.py). Parts are grouped into objects within one object class, from how their masks touch:

- contact(i, j): pixels of part j within `radius` pixels (chessboard distance) of part i, plus the same
  the other way round. Painted parts of one object share a boundary (they were one surface split by the
  part classes), so the contact of a handle with its own mug body runs along the whole joint, while a
  neighbouring mug's body only touches it along a short stretch, if at all.
- "attach" (the default, chosen on the world's val split: docs/results.md, training/objects_table.py):
  each part attaches to the LARGER part of another class of its object class that it touches most (equal
  areas: the lower index counts as larger); a part that touches none (cut off by an occluder, a leg seen
  only beside another leg, a gap in the masks) attaches to the nearest such part if it lies within
  `max_gap` x sqrt(its own area) pixels. The objects are the
  trees of that forest. A part with no larger part of another class (a mug body, a torso, a car body) is
  the root of its object. So two touching mug bodies never join (same class: never linked, and neither
  attaches through a smaller handle), each handle goes to the body it shares the longer joint with, and
  four legs all hang from the one torso.
- "attach_touching": "attach" without the nearest-part fallback (cut-off parts stay alone);
- "touch": connected components of "different classes of one object class, touching" (no size rule:
  one handle touching two mug bodies joins them);
- "class": every part of one object class in the image is one object (one object per class present);
- "none": every part is its own object.
Parts whose object class is unknown (UNKNOWN_OBJECT) are never grouped: each is its own object.

Ids: an object's id is the LOWEST id among its parts' ids (instance ids 1..n by score; track ids when
tracking, see tracking.with_track_ids), so an id means one object for as long as that part keeps its
track, ids never collide between objects of one frame, and the object map and part list agree by
construction. Score = the best part score; box = the union of its parts' boxes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from ..errors import WpsSamError

UNKNOWN_OBJECT = "unknown"  # object class of a part class whose object is not known: never grouped
GROUPING_METHODS = ("attach", "attach_touching", "touch", "class", "none")
DEFAULT_GROUPING = "attach"
DEFAULT_CONTACT_RADIUS = 3  # pixels; chosen with the method on the val split (docs/results.md)
# "attach" joins a part that touches nothing to the nearest part within this many times the square root of its
# own area (a 400-pixel leg: 20 px per unit); chosen with the method on the val split (docs/results.md)
DEFAULT_MAX_GAP = 12.0
_NAME_SPLIT = re.compile(r"[_\s\-]+")  # "mug_handle", "Quadruped Head", "car-wheel"


# ----------------------------------------------------------------------------- the class-to-object table
def object_class_from_name(part_class: str) -> str:
    """The object class a part-class name spells: its first word ("mug_handle" -> "mug", "Quadruped Head" ->
    "Quadruped"); UNKNOWN_OBJECT for a one-word name ("wheel")."""
    words = [w for w in _NAME_SPLIT.split(part_class.strip()) if w]
    return words[0] if len(words) > 1 else UNKNOWN_OBJECT


def derive_object_classes(class_names: Sequence[str]) -> tuple[str, ...]:
    """The table for names alone (old checkpoints, class lists): one object class per part class, in order."""
    return tuple(object_class_from_name(n) for n in class_names)


def object_table(class_names: Sequence[str], table: Mapping[str, Any], source: str) -> tuple[str, ...]:
    """{part class: object class} (checkpoint metadata) -> object classes in class order; `source` names
    where the table came from in the one-line errors (unknown or missing part classes, non-string values)."""
    if not isinstance(table, Mapping):
        raise WpsSamError(f"{source}: the part-to-object table must map part class names to object class names")
    unknown = sorted(set(map(str, table)) - set(class_names))
    if unknown:
        raise WpsSamError(f"{source}: the part-to-object table names unknown part classes {unknown}; "
                          f"known: {list(class_names)}")
    missing = [n for n in class_names if n not in table]
    if missing:
        raise WpsSamError(f"{source}: the part-to-object table misses part classes {missing}")
    bad = {k: v for k, v in table.items() if not isinstance(v, str) or not v.strip()}
    if bad:
        raise WpsSamError(f"{source}: object classes must be non-empty names, got {bad}")
    return tuple(table[n] for n in class_names)


# ----------------------------------------------------------------------------- grouping
@dataclass(frozen=True)
class MaskBox:
    y0: int
    y1: int
    x0: int
    x1: int


def mask_bounds(mask: np.ndarray) -> MaskBox | None:
    """The mask's bounding box (y1, x1 exclusive), None for an empty mask; also the tracker's crop."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return MaskBox(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def contact_matrix(masks: Sequence[np.ndarray], radius: int = DEFAULT_CONTACT_RADIUS) -> np.ndarray:
    """K x K int64, symmetric, zero diagonal: [i, j] = pixels of j within `radius` px of i plus those of i
    within `radius` px of j. Masks may overlap (overlap pixels count) or be painted (disjoint)."""
    if radius < 0:
        raise WpsSamError(f"contact radius must be >= 0 pixels, got {radius}")
    k = len(masks)
    out = np.zeros((k, k), dtype=np.int64)
    boxes = [mask_bounds(m) for m in masks]
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    for i, (mask, box) in enumerate(zip(masks, boxes)):
        if box is None:
            continue
        h, w = mask.shape
        y0, y1 = max(box.y0 - radius, 0), min(box.y1 + radius, h)
        x0, x1 = max(box.x0 - radius, 0), min(box.x1 + radius, w)
        near = cv2.dilate(mask[y0:y1, x0:x1].astype(np.uint8), kernel).astype(bool) if radius else mask[y0:y1, x0:x1]
        for j, other in enumerate(boxes):
            if j == i or other is None or other.y0 >= y1 or other.y1 <= y0 or other.x0 >= x1 or other.x1 <= x0:
                continue
            out[i, j] = int(np.count_nonzero(near & masks[j][y0:y1, x0:x1]))
    return out + out.T


def _distances(masks: Sequence[np.ndarray], wanted: np.ndarray) -> np.ndarray:
    """K x K float: [i, j] = the least distance (pixels, L2) from a pixel of i to one of j where wanted[i, j],
    else inf; one distance transform per part that some part wants."""
    out = np.full(wanted.shape, np.inf)
    for j in np.flatnonzero(wanted.any(axis=0)):
        if not masks[j].any():
            continue
        to_j = cv2.distanceTransform((~masks[j].astype(bool)).astype(np.uint8), cv2.DIST_L2, 3)
        for i in np.flatnonzero(wanted[:, j]):
            if masks[i].any():
                out[i, j] = float(to_j[masks[i].astype(bool)].min())
    return out


def group_parts(masks: Sequence[np.ndarray], object_classes: Sequence[str], part_classes: Sequence[int],
                method: str = DEFAULT_GROUPING, radius: int = DEFAULT_CONTACT_RADIUS,
                max_gap: float = DEFAULT_MAX_GAP) -> np.ndarray:
    """One group index (0..G-1, in order of first member) per part: the parts of one object share it.

    `object_classes[i]` / `part_classes[i]`: part i's object class and part class (any hashable ids)."""
    k = len(masks)
    if not len(object_classes) == len(part_classes) == k:
        raise WpsSamError(f"{k} masks, {len(object_classes)} object classes and {len(part_classes)} part classes")
    if method not in GROUPING_METHODS:
        raise WpsSamError(f"object grouping must be one of {list(GROUPING_METHODS)}, got {method!r}")
    parent = list(range(k))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        parent[root(i)] = root(j)

    known = [o != UNKNOWN_OBJECT for o in object_classes]
    if method == "class":
        first: dict[str, int] = {}
        for i in range(k):
            if known[i]:
                join(i, first.setdefault(object_classes[i], i))
    elif method != "none":
        contact = contact_matrix(masks, radius)
        linkable = np.array([[known[i] and object_classes[i] == object_classes[j] and part_classes[i] != part_classes[j]
                              for j in range(k)] for i in range(k)], dtype=bool).reshape(k, k)
        contact = np.where(linkable, contact, 0)
        if method == "touch":
            for i, j in zip(*np.nonzero(np.triu(contact))):
                join(int(i), int(j))
        else:
            area = np.array([np.count_nonzero(m) for m in masks])
            rank = np.lexsort((-np.arange(k), area)).argsort()  # by area; equal areas: the lower index is "larger"
            larger = linkable & (rank[None, :] > rank[:, None])
            distance = _distances(masks, larger) if method == "attach" else None
            for i in range(k):
                touching = np.flatnonzero(larger[i] & (contact[i] > 0))
                if touching.size:  # the most contact; ties to the larger part
                    join(i, int(max(touching, key=lambda j: (contact[i, j], rank[j]))))
                elif distance is not None and np.isfinite(gap := distance[i].min()) \
                        and gap <= max_gap * np.sqrt(area[i]):  # cut off (occluded, a gap in the masks): the nearest
                    join(i, int(np.argmin(distance[i])))
    roots = [root(i) for i in range(k)]
    index: dict[int, int] = {}
    return np.array([index.setdefault(r, len(index)) for r in roots], dtype=np.int64)


# ----------------------------------------------------------------------------- objects of a result
@dataclass(frozen=True)
class PartObject:
    """One object: its id (the lowest id of its parts), class, best part score, union box, part ids."""

    object_id: int
    object_class: str
    score: float
    box_xyxy: tuple[float, float, float, float]  # original pixels, x1/y1 exclusive, as PartInstance's
    part_ids: tuple[int, ...] = field(default=())  # instance ids (track ids when tracking), ascending

    def to_json(self) -> dict[str, Any]:
        return {"object_id": self.object_id, "object_class": self.object_class, "score": round(self.score, 6),
                "box_xyxy": [round(v, 2) for v in self.box_xyxy], "part_ids": list(self.part_ids)}


def objects_from_parts(instances: Sequence[Any]) -> tuple[list[Any], list[PartObject]]:
    """Parts whose `object_id` fields say which parts belong together (any key > 0 shared by one object's parts;
    0 = not linked: no object) -> (the parts with object_id = the lowest instance_id of their object, the
    objects by descending score, ties by id). Parts are PartInstance-like: instance_id, score, box_xyxy,
    object_id, object_class."""
    members: dict[int, list[Any]] = {}
    for inst in instances:
        if inst.object_id:
            members.setdefault(inst.object_id, []).append(inst)
    new_id = {0: 0} | {key: min(p.instance_id for p in parts) for key, parts in members.items()}
    objects = []
    for key, parts in members.items():
        boxes = np.array([p.box_xyxy for p in parts], dtype=np.float64)
        box = (float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max()))
        objects.append(PartObject(new_id[key], parts[0].object_class, max(float(p.score) for p in parts), box,
                                  tuple(sorted(p.instance_id for p in parts))))
    objects.sort(key=lambda o: (-o.score, o.object_id))
    return [replace(inst, object_id=new_id[inst.object_id]) for inst in instances], objects


def with_objects(seg: Any, object_classes: Sequence[str], method: str = DEFAULT_GROUPING,
                 radius: int = DEFAULT_CONTACT_RADIUS, max_gap: float = DEFAULT_MAX_GAP) -> Any:
    """A copy of a PartSegmentation whose parts carry object_id / object_class and whose `objects` lists
    the objects; `object_classes[k - 1]` is the object class of part class k (the segmenter's table)."""
    if len(object_classes) != len(seg.class_names):
        raise WpsSamError(f"{len(object_classes)} object classes for {len(seg.class_names)} part classes")
    kinds = [object_classes[inst.class_id - 1] for inst in seg.instances]
    groups = group_parts([inst.mask for inst in seg.instances], kinds, [inst.class_id for inst in seg.instances],
                         method, radius, max_gap)
    keyed = [replace(inst, object_id=int(g) + 1, object_class=kind)
             for inst, g, kind in zip(seg.instances, groups, kinds)]
    instances, objects = objects_from_parts(keyed)
    return replace(seg, instances=instances, objects=objects)


def object_id_map(instance_ids: np.ndarray, instances: Sequence[Any]) -> np.ndarray:
    """HxW uint16 object map from the instance map: 0 = no part, o = the object whose id is o (mono16, like
    the instance map, so both can be read at the same pixel)."""
    size = max([int(instance_ids.max()) if instance_ids.size else 0] + [inst.instance_id for inst in instances]) + 1
    lut = np.zeros(size, dtype=np.uint16)
    for inst in instances:
        lut[inst.instance_id] = inst.object_id
    return lut[instance_ids]
