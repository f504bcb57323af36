"""The procedural part world: determinism, exact annotations, vocabulary, occlusion, touching parts."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from wps_sam_core.cli import main as cli_main
from wps_sam_core.data.world import (KIND_PARTS, MIN_PART_PIXELS, OBJECT_KINDS, PART_CLASSES, render_scene,
                                     write_world)

SEED, SPLIT, N_IMAGES = 7, "val", 12

# pycocotools decode trips a harmless NumPy 2 deprecation warning
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world(out, N_IMAGES, SEED, split=SPLIT)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _decode(ann: dict) -> np.ndarray:
    rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode("ascii"))
    return mask_utils.decode(rle).astype(bool)


def test_same_seed_gives_byte_identical_dataset(world_dir, tmp_path):
    write_world(tmp_path / "again", N_IMAGES, SEED, split=SPLIT)
    first, second = _files(world_dir), _files(tmp_path / "again")
    assert len(first) == N_IMAGES + 2  # images + part json + object json
    assert first == second
    write_world(tmp_path / "other", 2, SEED + 1, split=SPLIT)
    other = _files(tmp_path / "other")
    assert other[f"images/{SPLIT}/000000.png"] != first[f"images/{SPLIT}/000000.png"]


def test_splits_draw_different_images():
    assert not np.array_equal(render_scene(SEED, 0, split="train").image, render_scene(SEED, 0, split="val").image)


def test_annotations_are_exactly_the_rendered_part_pixels(world_dir):
    parts = json.loads((world_dir / "annotations" / SPLIT / f"{SPLIT}.json").read_text())
    assert [c["name"] for c in sorted(parts["categories"], key=lambda c: c["id"])] == list(PART_CLASSES)
    by_image: dict[int, list[dict]] = {}
    for ann in parts["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for image in parts["images"]:
        index = image["id"] - 1
        scene = render_scene(SEED, index, image["width"], SPLIT)  # re-render from the generator's internals
        png = cv2.imread(str(world_dir / "images" / SPLIT / image["file_name"]), cv2.IMREAD_COLOR)
        assert np.array_equal(cv2.cvtColor(png, cv2.COLOR_BGR2RGB), scene.image)
        anns = by_image.get(image["id"], [])
        assert len(anns) == len(scene.parts)
        coverage = np.zeros(scene.part_ids.shape, dtype=np.int32)
        labels = np.zeros(scene.part_ids.shape, dtype=np.int32)
        for k, ann in enumerate(anns, start=1):
            mask = _decode(ann)
            assert np.array_equal(mask, scene.part_ids == k)
            assert ann["area"] == int(mask.sum()) >= MIN_PART_PIXELS and ann["iscrowd"] == 0
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            coverage += mask
            labels[mask] = ann["category_id"]
        assert coverage.max() <= 1  # every labelled pixel belongs to exactly one annotation
        assert np.array_equal(coverage == 1, scene.part_ids > 0)
        assert np.array_equal(labels, scene.part_labels())


def test_object_annotations_are_unions_of_their_parts(world_dir):
    ann_dir = world_dir / "annotations" / SPLIT
    parts = {a["id"]: a for a in json.loads((ann_dir / f"{SPLIT}.json").read_text())["annotations"]}
    objects = json.loads((ann_dir / f"{SPLIT}_objects.json").read_text())
    assert [c["name"] for c in sorted(objects["categories"], key=lambda c: c["id"])] == list(OBJECT_KINDS)
    assert objects["annotations"]
    for obj in objects["annotations"]:
        members = [parts[i] for i in obj["part_ids"]]
        assert members and all(p["object_id"] == obj["id"] and p["image_id"] == obj["image_id"] for p in members)
        kind = OBJECT_KINDS[obj["category_id"] - 1]
        assert {PART_CLASSES[p["category_id"] - 1] for p in members} <= set(KIND_PARTS[kind])
        assert np.array_equal(_decode(obj), np.any([_decode(p) for p in members], axis=0))


def test_vocabulary_and_coverage_of_kinds_and_classes():
    assert len(OBJECT_KINDS) >= 5 and len(PART_CLASSES) >= 10
    assert len(set(PART_CLASSES)) == len(PART_CLASSES)
    scenes = [render_scene(3, i, 128) for i in range(40)]
    kinds = Counter(o.kind_index for s in scenes for o in s.objects)
    classes = Counter(p.class_index for s in scenes for p in s.parts)
    assert set(kinds) == set(range(len(OBJECT_KINDS)))
    assert set(classes) == set(range(len(PART_CLASSES)))


def test_objects_occlude_each_other():
    scenes = [render_scene(11, i) for i in range(20)]
    occluded = [o for s in scenes for o in s.objects if o.occluded_by_objects > 0]
    assert len(occluded) >= 3
    for scene in scenes:  # annotations count visible pixels only
        for i, obj in enumerate(scene.objects):
            assert obj.visible_area == int(scene.object_mask(i).sum()) <= obj.amodal_area - obj.occluded_by_objects


def test_parts_of_an_object_share_boundaries():
    touching_kinds = set()
    for index in range(30):
        scene = render_scene(5, index)
        ids = scene.part_ids
        pairs = np.concatenate([np.stack([ids[:, 1:].ravel(), ids[:, :-1].ravel()], 1),
                                np.stack([ids[1:, :].ravel(), ids[:-1, :].ravel()], 1)])
        pairs = pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0) & (pairs[:, 0] != pairs[:, 1])]
        for a, b in np.unique(pairs, axis=0):
            pa, pb = scene.parts[a - 1], scene.parts[b - 1]
            if pa.object_index == pb.object_index:
                touching_kinds.add(scene.objects[pa.object_index].kind_index)
    assert touching_kinds == set(range(len(OBJECT_KINDS)))


def test_cli_writes_the_layout_and_rejects_bad_arguments(tmp_path, capsys):
    assert cli_main(["world", "--out", str(tmp_path), "--n", "2", "--seed", "1", "--size", "96", "--split", "test"]) == 0
    assert sorted(p.name for p in (tmp_path / "images" / "test").iterdir()) == ["000000.png", "000001.png"]
    assert (tmp_path / "annotations" / "test" / "test.json").is_file()
    assert (tmp_path / "annotations" / "test" / "test_objects.json").is_file()
    assert cv2.imread(str(tmp_path / "images" / "test" / "000001.png")).shape == (96, 96, 3)
    assert cli_main(["world", "--out", str(tmp_path), "--n", "0"]) == 2
    assert "--n" in capsys.readouterr().err
    assert cli_main(["world", "--out", str(tmp_path), "--n", "1", "--split", "../x"]) == 2
