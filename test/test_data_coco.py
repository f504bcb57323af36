"""COCO part datasets: decoding, category mapping, skipping and error reporting, DataLoader use."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from wps_sam_core.data.categories import CategoryMap
from wps_sam_core.data.coco import SKIP_REASONS, CocoPartDataset, semantic_label_map
from wps_sam_core.errors import WpsSamError

H, W = 24, 32
CATEGORIES = [{"id": 12, "name": "wheel"}, {"id": 3, "name": "body"}, {"id": 7, "name": "handle"}]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE written by hand (column-major runs, starting with background)."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(edges).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": [mask.shape[0], mask.shape[1]], "counts": [int(r) for r in runs]}


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def blob_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_dataset(root: Path, images: list[dict], annotations: list[dict], categories=CATEGORIES,
                  split: str = "train", write_images: bool = True) -> Path:
    """PartImageNet layout under root; images get seeded random pixels. Returns the JSON path."""
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    if write_images:
        for entry in images:
            pixels = np.random.default_rng(entry["id"]).integers(0, 255, (entry["height"], entry["width"], 3))
            cv2.imwrite(str(image_dir / entry["file_name"]), pixels.astype(np.uint8))
    ann_file = root / "annotations" / split / f"{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann_file


def image_entry(image_id: int, h: int = H, w: int = W) -> dict:
    return {"id": image_id, "file_name": f"img{image_id}.png", "height": h, "width": w}


def ann(ann_id: int, image_id: int, category_id: int, segmentation=None, bbox=None) -> dict:
    entry = {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0}
    if segmentation is not None:
        entry["segmentation"] = segmentation
    if bbox is not None:
        entry["bbox"] = bbox
    return entry


RECT_POLYGON = [[2, 3, 10, 3, 10, 8, 2, 8]]  # pixel-edge corners: covers cols 2..9, rows 3..7


def test_polygon_and_rle_segmentations_decode_to_the_right_masks(tmp_path):
    mask_rle = blob_mask(10, 20, 15, 25)
    mask_rle[12:14, 18:30] = True  # not a rectangle
    mask_unc = blob_mask(0, 5, 0, 4) | blob_mask(20, 24, 28, 32)  # starts with a foreground pixel, 2 blobs
    anns = [
        ann(1, 1, 3, RECT_POLYGON, bbox=[0, 0, 1, 1]),  # deliberately wrong bbox: the mask's box wins
        ann(2, 1, 7, compressed_rle(mask_rle)),
        ann(3, 1, 12, uncompressed_rle(mask_unc)),
        ann(4, 2, 3, bbox=[4.0, 5.0, 6.0, 2.0]),  # box only
    ]
    write_dataset(tmp_path, [image_entry(1), image_entry(2)], anns)
    data = CocoPartDataset.from_root(tmp_path, "train")
    inst = data.instances(0)
    expected_rect = np.zeros((H, W), bool)
    expected_rect[3:8, 2:10] = True
    assert inst.has_masks and inst.masks.shape == (3, H, W) and inst.masks.dtype == bool
    np.testing.assert_array_equal(inst.masks[0], expected_rect)
    np.testing.assert_array_equal(inst.masks[1], mask_rle)
    np.testing.assert_array_equal(inst.masks[2], mask_unc)
    np.testing.assert_allclose(inst.boxes, [[2, 3, 10, 8], [15, 10, 30, 20], [0, 0, 32, 24]])
    assert inst.boxes.dtype == np.float32 and inst.annotation_ids.tolist() == [1, 2, 3]

    box_only = data.instances(1)
    np.testing.assert_allclose(box_only.boxes, [[4, 5, 10, 7]])
    assert not box_only.has_masks
    with pytest.raises(WpsSamError, match="annotation id 4 has no segmentation"):
        _ = box_only.masks


def test_category_ids_map_to_contiguous_indices_in_id_order(tmp_path):
    anns = [ann(1, 1, 12, RECT_POLYGON), ann(2, 1, 3, compressed_rle(blob_mask(12, 20, 12, 20))),
            ann(3, 1, 7, compressed_rle(blob_mask(0, 2, 20, 30)))]
    write_dataset(tmp_path, [image_entry(1)], anns)
    data = CocoPartDataset.from_root(tmp_path, "train")
    assert data.class_names == ["body", "handle", "wheel"]  # ids 3, 7, 12
    assert data.category_map.index_of(12) == 2 and data.category_map.label_of(3) == 1
    inst = data.instances(0)
    assert inst.class_indices.tolist() == [2, 0, 1] and inst.labels.tolist() == [3, 1, 2]
    labels = inst.semantic_labels()
    assert labels.dtype == np.uint8
    assert labels[5, 5] == 3 and labels[15, 15] == 1 and labels[1, 25] == 2 and labels[22, 2] == 0
    with pytest.raises(WpsSamError, match="unknown category id 5"):
        data.category_map.index_of(5)
    assert pickle.loads(pickle.dumps(data.category_map)) == data.category_map


def test_category_map_rejects_duplicates():
    with pytest.raises(WpsSamError, match="category id 3 appears twice"):
        CategoryMap.from_coco([{"id": 3, "name": "a"}, {"id": 3, "name": "b"}], "x.json")
    with pytest.raises(WpsSamError, match="duplicate category names"):
        CategoryMap.from_coco([{"id": 1, "name": "a"}, {"id": 2, "name": "a"}], "x.json")


def test_semantic_map_overlap_smaller_wins_then_later_wins():
    big, small = blob_mask(0, 20, 0, 20), blob_mask(5, 8, 5, 8)
    first, second = blob_mask(0, 4, 24, 28), blob_mask(2, 6, 26, 30)  # equal areas, overlapping
    labels = semantic_label_map(np.stack([small, big, first, second]), np.array([0, 1, 2, 3]), num_classes=4)
    assert labels[6, 6] == 1        # small (class index 0 -> label 1) on top of big, though listed first
    assert labels[15, 15] == 2
    assert labels[3, 27] == 4       # equal areas: the later annotation wins
    assert labels[0, 24] == 3


def test_images_without_usable_annotations_are_skipped_and_counted(tmp_path, caplog):
    images = [image_entry(i) for i in (1, 2, 3, 4)]
    anns = [ann(1, 2, 3, RECT_POLYGON), ann(2, 4, 7, RECT_POLYGON),
            {**ann(3, 3, 7, uncompressed_rle(blob_mask(0, 4, 0, 4))), "iscrowd": 1}]  # image 3: crowd only
    write_dataset(tmp_path, images, anns)
    with caplog.at_level("INFO"):
        data = CocoPartDataset.from_root(tmp_path, "train")
    assert len(data) == 2 and data.image_ids == [2, 4]
    assert data.num_images_without_annotations == 2 and data.num_crowd_ignored == 1
    assert "2 images without usable annotations" in caplog.text
    assert data.index_of_image_id(4) == 1
    with_crowd = CocoPartDataset.from_root(tmp_path, "train", include_crowd=True)
    assert with_crowd.image_ids == [2, 3, 4] and with_crowd.num_images_without_annotations == 1


def test_corrupt_json_names_the_file(tmp_path):
    bad = tmp_path / "annotations" / "val" / "val.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"images": [], "annotations": [')
    for skip_bad in (False, True):  # a file that cannot be parsed cannot be partly skipped
        with pytest.raises(WpsSamError, match=r"corrupt annotation JSON .*val\.json"):
            CocoPartDataset.from_root(tmp_path, "val", skip_bad=skip_bad)
    with pytest.raises(WpsSamError, match="annotation file not found"):
        CocoPartDataset.from_root(tmp_path, "nope")


BAD_CASES = {
    # reason: (annotation or image problem, expected message fragment)
    "missing_image": ("missing_image", r"image id 2: image file not found: .*img2\.png"),
    "empty_polygon": ("empty_segmentation", r"annotation id 12: empty polygon list"),
    "two_point_polygon": ("empty_segmentation", r"annotation id 13: polygon 0 has 2 points"),
    "unknown_category": ("unknown_category", r"annotation id 14: unknown category_id 99"),
    "bad_bbox": ("bad_bbox", r"annotation id 15: bbox has non-positive size"),
    "missing_keys": ("missing_keys", r"annotation id 16: needs integer 'id', 'image_id' and 'category_id'"),
    "short_rle": ("bad_segmentation", r"annotation id 17: RLE run lengths add up to 5"),
    "rle_size": ("bad_segmentation", r"annotation id 18: RLE size \[10, 10\] does not match"),
    "outside": ("empty_segmentation", r"annotation id 19: segmentation covers no pixel"),
    "unknown_image": ("unknown_image", r"annotation id 20: unknown image_id 77"),
}


def bad_dataset(root: Path, case: str) -> Path:
    """Image 1 is always fine; image 2 carries one good annotation plus the bad thing."""
    images = [image_entry(1), image_entry(2)]
    anns = [ann(1, 1, 3, RECT_POLYGON), ann(2, 2, 7, RECT_POLYGON)]
    bad = {
        "empty_polygon": ann(12, 2, 3, []),
        "two_point_polygon": ann(13, 2, 3, [[1, 1, 5, 5]]),
        "unknown_category": ann(14, 2, 99, RECT_POLYGON),
        "bad_bbox": ann(15, 2, 3, bbox=[1, 1, 0, 4]),
        "missing_keys": {"id": 16, "image_id": 2, "segmentation": RECT_POLYGON},
        "short_rle": ann(17, 2, 3, {"size": [H, W], "counts": [2, 3]}),
        "rle_size": ann(18, 2, 3, {"size": [10, 10], "counts": [0, 100]}),
        "outside": ann(19, 2, 3, [[40, 30, 50, 30, 50, 40]]),
        "unknown_image": ann(20, 77, 3, RECT_POLYGON),
    }.get(case)
    write_dataset(root, images, anns + ([bad] if bad else []))
    if case == "missing_image":
        (root / "images" / "train" / "img2.png").unlink()
    return root


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_entries_raise_naming_them_or_are_counted_with_skip_bad(tmp_path, case):
    reason, message = BAD_CASES[case]
    assert reason in SKIP_REASONS
    root = bad_dataset(tmp_path, case)
    with pytest.raises(WpsSamError, match=message):
        CocoPartDataset.from_root(root, "train")
    data = CocoPartDataset.from_root(root, "train", skip_bad=True)
    assert data.skip_counts == {reason: 1}
    expected_images = [1] if case == "missing_image" else [1, 2]
    assert data.image_ids == expected_images
    assert data.num_instances == len(expected_images)  # only the good annotations remain


def test_skip_counts_accumulate_per_reason(tmp_path):
    images = [image_entry(1), image_entry(2), {"id": 3, "file_name": "img3.png"}]  # 3: no size
    anns = [ann(1, 1, 3, RECT_POLYGON), ann(2, 1, 3, []), ann(3, 1, 3, [[0, 0, 1, 1]]), ann(4, 1, 99, RECT_POLYGON),
            ann(5, 2, 3, []), ann(1, 1, 7, RECT_POLYGON), ann(6, 3, 3, RECT_POLYGON)]
    write_dataset(tmp_path, images[:2], anns, write_images=True)
    ann_file = tmp_path / "annotations" / "train" / "train.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    data = CocoPartDataset.from_root(tmp_path, "train", skip_bad=True)
    assert data.skip_counts == {"bad_image_entry": 1, "empty_segmentation": 3, "unknown_category": 1,
                                "duplicate_id": 1}
    assert data.image_ids == [1] and data.num_images_without_annotations == 1  # image 2 lost its only annotation
    assert data.summary()["skipped"] == data.skip_counts


def test_items_read_images_and_work_in_a_dataloader(tmp_path):
    import torch.utils.data

    images = [image_entry(1), image_entry(2, h=16, w=20)]
    anns = [ann(1, 1, 3, RECT_POLYGON), ann(2, 2, 12, compressed_rle(np.pad(np.ones((4, 4), bool), ((2, 10), (3, 13))))),
            ann(3, 2, 7, RECT_POLYGON)]
    write_dataset(tmp_path, images, anns)
    data = CocoPartDataset(tmp_path / "annotations/train/train.json", tmp_path / "images/train")
    sample = data[1]
    expected = cv2.cvtColor(cv2.imread(str(tmp_path / "images/train/img2.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(sample.image, expected)
    assert sample.image.dtype == np.uint8 and sample.image.shape == (16, 20, 3)
    assert (sample.image_id, sample.file_name, len(sample)) == (2, "img2.png", 2)
    assert sample.class_indices.tolist() == [2, 1] and sample.masks.shape == (2, 16, 20)
    np.testing.assert_allclose(sample.boxes[0], [3, 2, 7, 6])

    clone = pickle.loads(pickle.dumps(data))
    assert clone.image_ids == data.image_ids and clone[0].boxes.tolist() == data[0].boxes.tolist()
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=1, collate_fn=list)
    (batch,) = list(loader)
    assert [s.image_id for s in batch] == [1, 2] and batch[0].image.shape == (H, W, 3)
    with pytest.raises(IndexError):
        data[2]


def test_image_size_disagreeing_with_the_annotation_names_the_file(tmp_path):
    write_dataset(tmp_path, [image_entry(1)], [ann(1, 1, 3, RECT_POLYGON)])
    cv2.imwrite(str(tmp_path / "images/train/img1.png"), np.zeros((H + 1, W, 3), np.uint8))
    data = CocoPartDataset.from_root(tmp_path, "train")
    with pytest.raises(WpsSamError, match=r"img1\.png: image is 32x25 but the annotation file"):
        data[0]
