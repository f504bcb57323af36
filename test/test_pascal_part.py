"""Pascal-Part label PNGs -> COCO part format, read back by CocoPartDataset."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from wps_sam_core.cli import main as cli_main
from wps_sam_core.data.coco import CocoPartDataset
from wps_sam_core.data.pascal_part import convert_pascal_part, label_components, read_class_list
from wps_sam_core.errors import WpsSamError

CLASSES = ["head", "torso", "leg"]  # values 1, 2, 3


def make_labels(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.uint8)
    labels[2:10, 3:12] = 1                      # head
    labels[14:20, 2:6] = 3                      # leg, component 1
    labels[14:20, w - 8: w - 3] = 3             # leg, component 2 (separate)
    labels[11:14, 4:w - 4] = 2                  # torso touching both legs (different class)
    labels[0:2, w - 6:] = 255                   # ignore region
    y, x = rng.integers(0, h - 3), rng.integers(w // 2, w - 3)
    labels[y: y + 2, x: x + 2] = 1              # a second, seeded head blob (may merge; fine either way)
    return labels


def write_pair(images_dir: Path, labels_dir: Path, stem: str, labels: np.ndarray, palette: bool = False,
               suffix: str = ".jpg") -> None:
    h, w = labels.shape
    cv2.imwrite(str(images_dir / f"{stem}{suffix}"), np.full((h, w, 3), 90, np.uint8))
    image = Image.fromarray(labels)  # uint8 2-D -> mode "L"
    if palette:  # VOC-style indexed PNG: pixel values are palette indices, colours are arbitrary
        image = image.convert("P")  # "L" -> "P" keeps the values as indices (greyscale palette)
        image.putpalette([(i * 37) % 256 for i in range(768)])
    image.save(labels_dir / f"{stem}.png")
    if palette:
        with Image.open(labels_dir / f"{stem}.png") as check:
            assert check.mode == "P"  # the converter must read indices, not colours


@pytest.fixture()
def pascal_dir(tmp_path):
    images_dir, labels_dir = tmp_path / "JPEGImages", tmp_path / "parts"
    images_dir.mkdir()
    labels_dir.mkdir()
    truth = {}
    for i, (h, w) in enumerate([(24, 30), (22, 28), (26, 32)]):
        truth[f"im{i}"] = make_labels(h, w, seed=i)
        write_pair(images_dir, labels_dir, f"im{i}", truth[f"im{i}"], palette=(i == 1), suffix=(".jpg", ".png")[i % 2])
    empty = np.zeros((10, 10), np.uint8)
    write_pair(images_dir, labels_dir, "z_empty", empty)  # no parts: kept in JSON, skipped by the dataset
    classes = tmp_path / "classes.txt"
    classes.write_text("# Pascal-Part subset\nbackground\n" + "\n".join(CLASSES) + "\n")
    return images_dir, labels_dir, classes, truth


def test_round_trip_masks_equal_the_label_png_components(pascal_dir, tmp_path):
    images_dir, labels_dir, classes, truth = pascal_dir
    out = tmp_path / "coco"
    report = convert_pascal_part(images_dir, labels_dir, classes, out, "val")
    assert report.num_images == 4 and report.annotation_file == out / "annotations/val/val.json"
    assert report.instances_per_class["leg"] == 6 and report.instances_per_class["torso"] == 3

    data = CocoPartDataset.from_root(out, "val")
    assert data.class_names == CLASSES and len(data) == 3 and data.num_images_without_annotations == 1
    assert data.num_instances == report.num_annotations
    for index in range(len(data)):
        sample = data[index]
        labels = truth[Path(sample.file_name).stem]
        assert sample.image.shape[:2] == labels.shape
        expected = [(value - 1, m) for value in (1, 2, 3) for m in label_components(labels, value)]
        assert sample.class_indices.tolist() == [c for c, _ in expected]
        for (_, mask), got in zip(expected, sample.masks):
            np.testing.assert_array_equal(got, mask)
        # components of one image never overlap, so the label map is the PNG with ignore -> background
        np.testing.assert_array_equal(sample.semantic_labels(), np.where(labels == 255, 0, labels))
        rows, cols = np.nonzero(sample.masks[0])
        np.testing.assert_allclose(sample.boxes[0], [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    coco = json.loads(report.annotation_file.read_text())
    assert {a["iscrowd"] for a in coco["annotations"]} == {0}
    assert all(a["area"] > 0 and len(a["bbox"]) == 4 for a in coco["annotations"])
    assert not [p for p in out.rglob(".*")]  # no temporary files left behind


def test_class_list_formats(tmp_path):
    listed = tmp_path / "a.json"
    listed.write_text(json.dumps(["__background__", "head", "leg"]))
    assert read_class_list(listed).class_names == ("head", "leg")
    plain = tmp_path / "b.json"
    plain.write_text(json.dumps(["head", "leg"]))
    assert read_class_list(plain).category_ids == (1, 2)
    mapped = tmp_path / "c.json"
    mapped.write_text(json.dumps({"0": "background", "5": "wheel", "2": "door"}))
    cmap = read_class_list(mapped)
    assert cmap.category_ids == (2, 5) and cmap.class_names == ("door", "wheel")
    broken = tmp_path / "d.json"
    broken.write_text("[\"head\",")
    with pytest.raises(WpsSamError, match=r"corrupt class list JSON .*d\.json"):
        read_class_list(broken)


def test_bad_inputs_raise_naming_the_file_or_are_counted(pascal_dir, tmp_path):
    images_dir, labels_dir, classes, _ = pascal_dir
    odd = np.zeros((12, 12), np.uint8)
    odd[2:5, 2:5] = 9  # value 9 is not a class
    write_pair(images_dir, labels_dir, "odd", odd)
    lonely = np.ones((8, 8), np.uint8)
    Image.fromarray(lonely).save(labels_dir / "lonely.png")  # no image
    with pytest.raises(WpsSamError, match=r"no image for label PNG .*lonely\.png"):
        convert_pascal_part(images_dir, labels_dir, classes, tmp_path / "o1", "train")
    (labels_dir / "lonely.png").unlink()
    with pytest.raises(WpsSamError, match=r"odd\.png has values \[9\] not in the class list"):
        convert_pascal_part(images_dir, labels_dir, classes, tmp_path / "o1", "train")
    assert not (tmp_path / "o1" / "annotations").exists()  # nothing half-written
    Image.fromarray(lonely).save(labels_dir / "lonely.png")
    report = convert_pascal_part(images_dir, labels_dir, classes, tmp_path / "o2", "train", skip_bad=True,
                                 images_mode="none")
    assert report.skip_counts == {"unknown_value": 1, "missing_image": 1} and report.num_images == 4
    assert report.image_dir == images_dir and not (tmp_path / "o2" / "images").exists()


def test_cli_convert_then_dataset_info(pascal_dir, tmp_path, capsys):
    images_dir, labels_dir, classes, _ = pascal_dir
    out = tmp_path / "coco"
    argv = ["convert-pascal-part", "--images", str(images_dir), "--labels", str(labels_dir),
            "--classes", str(classes), "--out", str(out), "--split", "train", "--images-mode", "symlink"]
    assert cli_main(argv) == 0
    assert "4 images" in capsys.readouterr().out
    assert (out / "images/train/im0.jpg").is_symlink()
    assert cli_main(["dataset-info", "--data", str(out), "--split", "train"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 3 and info["images_without_annotations"] == 1 and info["skipped"] == {}
    assert set(info["instances_per_class"]) == set(CLASSES)
    assert cli_main(["dataset-info", "--data", str(out), "--split", "missing"]) == 2
    assert "annotation file not found" in capsys.readouterr().err
