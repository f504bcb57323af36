"""Parts linked to their object (postprocess/objects.py) and the assignment metric (evaluation/objects.py):
hand-made masks, hand-computed scores, the class-to-object table in dataset and checkpoint metadata."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from wps_sam_core.data.categories import CategoryMap
from wps_sam_core.errors import WpsSamError
from wps_sam_core.evaluation.objects import ObjectMetrics
from wps_sam_core.postprocess.objects import (
    DEFAULT_CONTACT_RADIUS, UNKNOWN_OBJECT, derive_object_classes, group_parts, object_id_map, object_table,
    objects_from_parts, with_objects,
)
from wps_sam_core.postprocess.tracking import with_track_ids

SHAPE = (60, 100)


def rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def painted(*masks: np.ndarray) -> list[np.ndarray]:
    """Later masks on top, as the segmenter paints: each pixel belongs to one part."""
    out, taken = [], np.zeros(SHAPE, bool)
    for mask in reversed(masks):
        out.append(mask & ~taken)
        taken |= mask
    return out[::-1]


def two_mugs() -> tuple[list[np.ndarray], list[str], list[int]]:
    """Mug A (tall body x 10..30) and mug B (short body x 30..50) side by side, bodies touching along x = 30.
    A's handle sticks out to the right above B's body, so it touches B's body too (along B's top edge), but
    shares its longer joint with A's body; B's handle is on B's right."""
    body_a, body_b = rect(10, 50, 10, 30), rect(25, 50, 30, 50)
    handle_a, handle_b = rect(12, 24, 30, 38), rect(30, 44, 50, 56)
    masks = painted(body_a, body_b, handle_a, handle_b)
    return masks, ["mug"] * 4, [1, 1, 2, 2]  # part classes: 1 mug_body, 2 mug_handle


def test_two_mugs_side_by_side_each_handle_goes_to_its_own_mug():
    masks, kinds, classes = two_mugs()
    groups = group_parts(masks, kinds, classes)
    assert groups[0] != groups[1], "two touching mug bodies must stay two mugs"
    assert groups[2] == groups[0] and groups[3] == groups[1]
    # the measured alternatives fail exactly here: "class" makes one mug of both
    assert len(set(group_parts(masks, kinds, classes, "class"))) == 1


def quadruped(dx: int) -> tuple[list[np.ndarray], list[int]]:
    """Torso, head, tail and four legs; the far-left leg shows only beside the near-left leg (cut off from the
    torso by it), as in the world's drawings."""
    torso = rect(10, 25, 10 + dx, 40 + dx)
    head, tail = rect(4, 14, 38 + dx, 46 + dx), rect(12, 15, 4 + dx, 10 + dx)
    legs = [rect(29, 40, 12 + dx, 15 + dx), rect(25, 40, 15 + dx, 18 + dx), rect(25, 40, 28 + dx, 31 + dx),
            rect(25, 40, 34 + dx, 37 + dx)]
    return painted(torso, head, tail, *legs), [1, 2, 3, 4, 4, 4, 4]


def test_an_object_with_four_legs_stays_one_object_and_two_animals_stay_two():
    masks, classes = quadruped(0)
    assert len(set(group_parts(masks, ["quadruped"] * 7, classes))) == 1
    gap = np.flatnonzero(masks[3].any(1))[0] - np.flatnonzero(masks[0].any(1))[-1] - 1
    assert gap > DEFAULT_CONTACT_RADIUS, "the far leg does not touch the torso"
    second, _ = quadruped(50)
    groups = group_parts(masks + second, ["quadruped"] * 14, classes * 2)
    assert len(set(groups[:7])) == 1 and len(set(groups[7:])) == 1 and groups[0] != groups[7]
    assert len(set(group_parts(masks, ["quadruped"] * 7, classes, "attach_touching"))) == 2  # the cut-off leg


def test_parts_of_other_or_unknown_object_classes_never_join():
    body, handle = rect(10, 30, 10, 30), rect(15, 25, 30, 36)
    assert len(set(group_parts([body, handle], ["mug", "bottle"], [1, 2]))) == 2
    assert len(set(group_parts([body, handle], [UNKNOWN_OBJECT] * 2, [1, 2]))) == 2
    assert len(set(group_parts([body, handle], ["mug"] * 2, [1, 2], "none"))) == 2
    with pytest.raises(WpsSamError, match="object grouping must be one of"):
        group_parts([body], ["mug"], [1], "nearest")


@dataclass
class Part:  # the PartInstance fields objects.py and with_track_ids read
    instance_id: int
    class_id: int
    score: float
    box_xyxy: tuple[float, float, float, float]
    mask: np.ndarray = field(repr=False)
    object_id: int = 0
    object_class: str = ""


@dataclass
class Seg:
    instance_ids: np.ndarray
    instances: list
    class_names: list
    objects: list = field(default_factory=list)


def mug_segmentation() -> Seg:
    masks, _, classes = two_mugs()
    ids = np.zeros(SHAPE, np.uint16)
    parts = []
    for k, (mask, cls) in enumerate(zip(masks, classes)):
        ys, xs = np.nonzero(mask)
        ids[mask] = k + 1
        parts.append(Part(k + 1, cls, 0.9 - 0.1 * k, (xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0), mask))
    return Seg(ids, parts, ["mug_body", "mug_handle"])


def test_objects_ids_boxes_scores_and_the_object_map():
    seg = with_objects(mug_segmentation(), ["mug", "mug"])
    assert [p.object_id for p in seg.instances] == [1, 2, 1, 2]  # the lowest part id of each object
    assert all(p.object_class == "mug" for p in seg.instances)
    a, b = seg.objects
    assert (a.object_id, a.part_ids, b.object_id, b.part_ids) == (1, (1, 3), 2, (2, 4))
    assert a.box_xyxy == (10.0, 10.0, 38.0, 50.0) and b.box_xyxy == (30.0, 25.0, 56.0, 50.0)
    assert a.score == pytest.approx(0.9) and b.score == pytest.approx(0.8)
    assert a.to_json() == {"object_id": 1, "object_class": "mug", "score": 0.9, "box_xyxy": [10.0, 10.0, 38.0, 50.0],
                           "part_ids": [1, 3]}
    omap = object_id_map(seg.instance_ids, seg.instances)
    assert omap.dtype == np.uint16
    for part in seg.instances:
        assert (omap[part.mask] == part.object_id).all()
    assert (omap[seg.instance_ids == 0] == 0).all()


def test_track_ids_carry_the_objects():
    seg = with_objects(mug_segmentation(), ["mug", "mug"])
    tracked = with_track_ids(seg, [7, 0, 5, 9])  # body B not confirmed yet
    assert [(p.instance_id, p.object_id) for p in tracked.instances] == [(7, 5), (5, 5), (9, 9)]
    assert [(o.object_id, o.part_ids) for o in tracked.objects] == [(5, (5, 7)), (9, (9,))]
    assert tracked.objects[1].box_xyxy == (50.0, 30.0, 56.0, 44.0)  # B's box shrinks to its confirmed handle
    omap = object_id_map(tracked.instance_ids, tracked.instances)
    assert set(np.unique(omap)) == {0, 5, 9} and (omap[seg.instances[1].mask] == 0).all()
    parts, objects = objects_from_parts([Part(3, 1, 0.5, (0, 0, 1, 1), rect(0, 1, 0, 1))])
    assert parts[0].object_id == 0 and objects == []  # not linked (object_id 0): no object


# ----------------------------------------------------------------------------- the metric, by hand
def test_metric_on_a_hand_computed_case():
    """GT: body + handle of object 1, body of object 2. Prediction: the same masks, all in one object.
    Pairs: (b1, h1) TP, (b1, b2) FP, (h1, b2) FP -> precision 1/3, recall 1, F1 2/4; no part has exactly its
    GT group; no object recovered."""
    masks = np.array(painted(rect(0, 10, 0, 10), rect(2, 8, 10, 14), rect(0, 10, 20, 30)))
    m = ObjectMetrics()
    m.add(masks, [1, 2, 1], [1, 1, 2], masks, [1, 2, 1], [4, 4, 4])
    r = m.compute()
    assert (r["pair_tp"], r["pair_fp"], r["pair_fn"]) == (1, 2, 0)
    assert r["pair_precision"] == pytest.approx(1 / 3) and r["pair_recall"] == 1.0 and r["pair_f1"] == 0.5
    assert r["part_accuracy"] == 0.0 and r["objects_exact"] == 0.0
    # the right grouping, but the handle badly segmented (IoU 12/24 = 0.5, not > 0.5): only the bodies match
    bad_handle = rect(2, 8, 10, 18)
    m = ObjectMetrics()
    m.add(masks, [1, 2, 1], [1, 1, 2], np.array([masks[0], bad_handle, masks[2]]), [1, 2, 1], [1, 1, 3])
    r = m.compute()
    assert (r["matched_parts"], r["pair_tp"], r["pair_fp"], r["pair_fn"]) == (2, 0, 0, 0)
    assert r["part_accuracy"] == 1.0 and math.isnan(r["pair_precision"])
    # object 2 recovered; object 1 not detected whole: 1 of 2 objects, 1 of 1 detected
    assert r["objects_exact"] == 0.5 and r["objects_exact_given_detected"] == 1.0
    # an extra prediction grouped into object 2's predicted object spoils "exact" but no matched pair
    m = ObjectMetrics()
    m.add(masks, [1, 2, 1], [1, 1, 2], np.array([*masks, rect(40, 50, 40, 50)]), [1, 2, 1, 2], [1, 1, 3, 3])
    r = m.compute()
    assert r["part_accuracy"] == 1.0 and r["pair_f1"] == 1.0 and r["objects_exact"] == 0.5


def test_metric_refuses_mismatched_lengths():
    with pytest.raises(WpsSamError, match="2 GT masks, 1 classes"):
        ObjectMetrics().add(np.zeros((2, 4, 4), bool), [1], [1, 1], np.zeros((0, 4, 4), bool), [], [])


# ----------------------------------------------------------------------------- the class-to-object table
def test_table_from_coco_supercategory_or_names():
    cats = CategoryMap.from_coco([{"id": 1, "name": "Quadruped Head", "supercategory": "Quadruped"},
                                  {"id": 2, "name": "car_wheel"}, {"id": 3, "name": "wheel"}])
    assert cats.object_classes == ("Quadruped", "car", UNKNOWN_OBJECT)
    assert cats.to_coco()[1] == {"id": 2, "name": "car_wheel", "supercategory": "car"}
    assert derive_object_classes(["mug_handle", "Biped Hand", "car-door"]) == ("mug", "Biped", "car")
    with pytest.raises(WpsSamError, match="bad supercategory 7"):
        CategoryMap.from_coco([{"id": 1, "name": "x_y", "supercategory": 7}])


def test_table_from_checkpoint_metadata_is_checked():
    names = ["mug_body", "mug_handle"]
    assert object_table(names, {"mug_handle": "mug", "mug_body": "mug"}, "ckpt") == ("mug", "mug")
    with pytest.raises(WpsSamError, match=r"ckpt: the part-to-object table names unknown part classes \['cup_rim'\]"):
        object_table(names, {"mug_body": "mug", "mug_handle": "mug", "cup_rim": "cup"}, "ckpt")
    with pytest.raises(WpsSamError, match=r"misses part classes \['mug_handle'\]"):
        object_table(names, {"mug_body": "mug"}, "ckpt")
    with pytest.raises(WpsSamError, match="object classes must be non-empty names"):
        object_table(names, {"mug_body": "mug", "mug_handle": ""}, "ckpt")


# ----------------------------------------------------------------------------- checkpoint metadata
def rewrite_metadata(src, dst, **changes):
    """A copy of a prompter checkpoint with its metadata changed (None deletes a key); tensors unchanged."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as handle:
        meta = dict(handle.metadata())
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    for key, value in changes.items():
        meta.pop(key, None) if value is None else meta.__setitem__(key, value)
    save_file(state, str(dst), metadata=meta)
    return dst


def test_checkpoint_carries_the_table_and_old_ones_derive_it(tiny_files, tmp_path, caplog):
    import json
    import logging

    from wps_sam_core.checkpoint import load_prompter_checkpoint, save_prompter_checkpoint

    ckpt = load_prompter_checkpoint(tiny_files[1])
    ckpt.class_names = ["mug_body", "mug_handle", "wheel"][:len(ckpt.class_names)]
    ckpt.object_classes = ["mug", "mug", "car"][:len(ckpt.class_names)]
    path = save_prompter_checkpoint(tmp_path / "new.safetensors", ckpt)
    assert load_prompter_checkpoint(path).object_classes == ckpt.object_classes
    old = rewrite_metadata(path, tmp_path / "old.safetensors", part_objects=None)
    with caplog.at_level(logging.WARNING, logger="wps_sam_core.checkpoint"):
        derived = load_prompter_checkpoint(old).object_classes
    assert derived == ["mug", "mug", UNKNOWN_OBJECT][:len(ckpt.class_names)]
    assert "records no part-to-object table" in caplog.text
    table = dict(zip(ckpt.class_names, ckpt.object_classes)) | {"cup_rim": "cup"}
    bad = rewrite_metadata(path, tmp_path / "bad.safetensors", part_objects=json.dumps(table))
    with pytest.raises(WpsSamError, match=r"bad.safetensors: the part-to-object table names unknown part classes "
                                          r"\['cup_rim'\]"):
        load_prompter_checkpoint(bad)


def test_embedded_model_table_matches_the_world_and_the_names():
    from wps_sam_core.data.world import KIND_PARTS, PART_CLASSES
    from wps_sam_core.embedded import embedded_available, embedded_object_classes

    if not embedded_available():
        pytest.skip("no embedded model in this installation")
    table = embedded_object_classes()
    assert table == tuple(kind for kind, parts in KIND_PARTS.items() for _ in parts)
    assert table == derive_object_classes(PART_CLASSES)  # what an old checkpoint of these classes would get
