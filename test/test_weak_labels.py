"""Weak labels: boxes, centre / interior points, seeded mixed supervision, per-dataset precompute."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from wps_sam_core.data.coco import CocoPartDataset, PartInstances
from wps_sam_core.data.weak_labels import (
    WeakLabelConfig, box_center, interior_point, make_weak_labels, precompute_weak_labels,
)
from wps_sam_core.errors import WpsSamError

H, W = 40, 48


def u_mask() -> np.ndarray:
    """A U: two thick arms and a bottom bar; the box centre lies in the empty gap between the arms."""
    mask = np.zeros((H, W), dtype=bool)
    mask[4:36, 6:16] = True    # left arm
    mask[4:36, 32:42] = True   # right arm
    mask[28:36, 6:42] = True   # bottom bar
    return mask


def rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def instances_of(masks: list[np.ndarray], image_id: int = 5, first_ann_id: int = 100) -> PartInstances:
    boxes = []
    for m in masks:
        rows, cols = np.nonzero(m)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    n = len(masks)
    return PartInstances(image_id, "x.png", H, W, 3, np.arange(first_ann_id, first_ann_id + n),
                         np.arange(n) % 3, np.array(boxes, np.float32), tuple(rle(m) for m in masks))


def inside(mask: np.ndarray, point: np.ndarray) -> bool:
    x, y = point
    return bool(mask[int(np.floor(y)), int(np.floor(x))])


def test_interior_point_is_inside_a_concave_mask_where_the_box_centre_is_not():
    mask = u_mask()
    inst = instances_of([mask])
    centre = make_weak_labels(inst, WeakLabelConfig("point", "center")).points[0]
    np.testing.assert_allclose(centre, box_center(inst.boxes[0]))
    assert not inside(mask, centre)
    deepest = make_weak_labels(inst, WeakLabelConfig("point", "interior")).points[0]
    assert inside(mask, deepest)
    for seed in range(20):  # random picks among deep pixels stay inside too
        point = make_weak_labels(inst, WeakLabelConfig("point", "interior", interior_fraction=0.6, seed=seed)).points[0]
        assert inside(mask, point)
        # and deep: at least 2 px from the boundary (arms are 10 px thick, max depth ~5)
        row, col = int(point[1]), int(point[0])
        assert mask[row - 2: row + 3, col - 2: col + 3].all()


def test_interior_point_prefers_depth_and_treats_the_image_border_as_boundary():
    mask = np.zeros((H, W), dtype=bool)
    mask[:, :20] = True  # touches the top, bottom and left image borders
    x, y = interior_point(mask)
    assert 8 <= x <= 12 and 18 <= y <= 22
    with pytest.raises(WpsSamError, match="empty mask"):
        interior_point(np.zeros((4, 4), bool))


def test_box_supervision_gives_boxes_only():
    inst = instances_of([u_mask(), np.pad(np.ones((5, 5), bool), ((2, H - 7), (3, W - 8)))])
    weak = make_weak_labels(inst, WeakLabelConfig("box"))
    assert weak.kinds == ("box", "box") and weak.is_box.all() and len(weak) == 2
    np.testing.assert_array_equal(weak.boxes, inst.boxes)
    assert np.isnan(weak.points).all()
    assert weak.class_indices.tolist() == [0, 1] and weak.annotation_ids.tolist() == [100, 101]


def many_instances(count: int = 40) -> PartInstances:
    rng = np.random.default_rng(3)
    masks = []
    for _ in range(count):
        y, x = rng.integers(0, H - 6), rng.integers(0, W - 6)
        m = np.zeros((H, W), bool)
        m[y: y + 6, x: x + 6] = True
        masks.append(m)
    return instances_of(masks)


def test_mixed_labels_are_deterministic_per_seed_and_independent_of_order():
    inst = many_instances()
    config = WeakLabelConfig("mixed", "interior", box_probability=0.5, interior_fraction=0.5, seed=7)
    first, again = make_weak_labels(inst, config), make_weak_labels(inst, config)
    assert first.kinds == again.kinds
    np.testing.assert_array_equal(first.points, again.points)
    np.testing.assert_array_equal(first.boxes, again.boxes)
    assert 5 < sum(k == "box" for k in first.kinds) < 35  # really mixed
    assert np.isnan(first.points[first.is_box]).all() and np.isnan(first.boxes[first.is_point]).all()
    assert not np.isnan(first.points[first.is_point]).any()

    other = make_weak_labels(inst, WeakLabelConfig("mixed", "interior", interior_fraction=0.5, seed=8))
    assert other.kinds != first.kinds

    # each instance's draw depends on (seed, image_id, annotation_id), not on its position
    reversed_inst = PartInstances(inst.image_id, inst.file_name, H, W, 3, inst.annotation_ids[::-1].copy(),
                                  inst.class_indices[::-1].copy(), inst.boxes[::-1].copy(), inst.rles[::-1])
    rev = make_weak_labels(reversed_inst, config)
    assert rev.kinds[::-1] == first.kinds
    np.testing.assert_array_equal(rev.points[::-1], first.points)


def test_mixed_extremes_and_config_validation():
    inst = many_instances(10)
    assert set(make_weak_labels(inst, WeakLabelConfig("mixed", box_probability=1.0)).kinds) == {"box"}
    assert set(make_weak_labels(inst, WeakLabelConfig("mixed", box_probability=0.0)).kinds) == {"point"}
    with pytest.raises(WpsSamError, match="weak supervision must be one of"):
        WeakLabelConfig("scribble")
    with pytest.raises(WpsSamError, match="point mode"):
        WeakLabelConfig("point", "corner")
    with pytest.raises(WpsSamError, match="box_probability"):
        WeakLabelConfig("mixed", box_probability=1.5)


def test_precompute_over_a_dataset_needs_no_images(tmp_path):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    images, anns = [], []
    for image_id in (3, 9):
        cv2.imwrite(str(image_dir / f"{image_id}.png"), np.zeros((H, W, 3), np.uint8))
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": H, "width": W})
        m = rle(u_mask())
        anns.append({"id": image_id * 10, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                     "segmentation": {"size": m["size"], "counts": m["counts"].decode()}})
    ann_file = tmp_path / "parts.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": 1, "name": "handle"}]}))
    data = CocoPartDataset(ann_file, image_dir)
    for path in image_dir.iterdir():
        path.unlink()  # precompute reads annotations only
    labels = precompute_weak_labels(data, WeakLabelConfig("point", "interior"))
    assert sorted(labels) == [3, 9]
    for weak in labels.values():
        assert weak.kinds == ("point",) and inside(u_mask(), weak.points[0])
    assert list(precompute_weak_labels(data, WeakLabelConfig("box"), indices=[1])) == [9]
