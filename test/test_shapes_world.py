"""The generic-shapes world for class-agnostic SAM pre-training."""
from __future__ import annotations

import inspect
import json
import re
import time

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import wps_sam_core.data.shapes_world as shapes_world
from wps_sam_core.cli import main as cli_main
from wps_sam_core.data.shapes_world import MIN_MASK_PIXELS, iter_shapes, render_shapes, write_shapes
from wps_sam_core.data.world import OBJECT_KINDS, PART_CLASSES

# pycocotools decode trips a harmless NumPy 2 deprecation warning
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_deterministic_per_seed_and_index():
    a, b = render_shapes(4, 9), render_shapes(4, 9)
    assert np.array_equal(a.image, b.image) and a.is_whole == b.is_whole
    assert len(a.masks) == len(b.masks) and all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
    assert not np.array_equal(a.image, render_shapes(4, 10).image)
    assert not np.array_equal(a.image, render_shapes(5, 9).image)
    streamed = iter_shapes(4, start=9)
    assert np.array_equal(next(streamed).image, a.image) and np.array_equal(next(streamed).image, render_shapes(4, 10).image)


def test_masks_are_non_empty_and_include_sub_shapes_of_wholes():
    n_sub = n_whole = 0
    for index in range(12):
        sample = render_shapes(1, index, 192)
        assert sample.image.shape == (192, 192, 3) and sample.image.dtype == np.uint8
        assert len(sample.masks) == len(sample.is_whole) > 0
        wholes = [m for m, w in zip(sample.masks, sample.is_whole) if w]
        assert np.sum(wholes, axis=0).max() <= 1  # wholes are the visible pixels of disjoint compositions
        for mask, whole in zip(sample.masks, sample.is_whole):
            assert mask.dtype == bool and mask.shape == (192, 192) and mask.sum() >= MIN_MASK_PIXELS
            if not whole:  # each sub-shape lies inside exactly one, strictly larger, whole
                owners = [w for w in wholes if (mask & w).any()]
                assert len(owners) == 1 and not (mask & ~owners[0]).any() and owners[0].sum() > mask.sum()
        n_sub += sum(not w for w in sample.is_whole)
        n_whole += sum(sample.is_whole)
    assert n_sub >= 10 and n_whole >= 20


def test_knows_nothing_of_the_part_world_vocabulary():
    source = inspect.getsource(shapes_world)
    for name in (*PART_CLASSES, *OBJECT_KINDS, "PART_CLASSES", "OBJECT_KINDS", "KIND_PARTS"):
        assert not re.search(rf"\b{name}\b", source), name


def test_written_dataset_is_byte_identical_and_decodes_to_the_masks(tmp_path):
    write_shapes(tmp_path / "a", 3, 2, 128)
    write_shapes(tmp_path / "b", 3, 2, 128)
    files_a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in sorted((tmp_path / "a").rglob("*")) if p.is_file()}
    files_b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in sorted((tmp_path / "b").rglob("*")) if p.is_file()}
    assert files_a == files_b and len(files_a) == 4
    data = json.loads((tmp_path / "a" / "annotations" / "train" / "train.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["shape"]
    sample = render_shapes(2, 1, 128)
    anns = [a for a in data["annotations"] if a["image_id"] == 2]
    assert [a["whole"] for a in anns] == sample.is_whole
    for ann, mask in zip(anns, sample.masks):
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode("ascii"))
        assert np.array_equal(mask_utils.decode(rle).astype(bool), mask)


def test_cli_shapes_flag(tmp_path):
    assert cli_main(["world", "--shapes", "--out", str(tmp_path), "--n", "2", "--size", "96"]) == 0
    assert len(list((tmp_path / "images" / "train").glob("*.png"))) == 2


def test_fast_enough_for_on_the_fly_training():
    render_shapes(0, 0)
    start = time.process_time()
    for index in range(20):
        render_shapes(0, index)
    per_sample = (time.process_time() - start) / 20
    assert per_sample < 0.1, f"{per_sample * 1000:.0f} ms per sample"
