"""Image files are read as viewers show them: EXIF orientation applied (phones store portraits rotated)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import random_image
from wps_sam_core.cli import main as wps_sam
from wps_sam_core.image_io import EXIF_ORIENTATION_TAG, read_image_rgb


def save_with_orientation(path, rgb: np.ndarray, orientation: int, **save_args) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    Image.fromarray(rgb).save(path, exif=exif.tobytes(), **save_args)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_reads_as_pil_shows_it(tmp_path, orientation):
    rgb = random_image(40, 60, seed=orientation)  # 60 wide, 40 high, no symmetry
    path = tmp_path / f"o{orientation}.png"  # lossless: the pixels must match exactly
    save_with_orientation(path, rgb, orientation)
    with Image.open(path) as image:
        assert image.getexif().get(EXIF_ORIENTATION_TAG) == orientation
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    got = read_image_rgb(path)
    assert got.shape == expected.shape == ((60, 40, 3) if orientation >= 5 else (40, 60, 3))
    assert np.array_equal(got, expected)
    assert got.flags.c_contiguous


def test_portrait_phone_jpeg_is_segmented_upright(tiny_files, tmp_path):
    """A 600x400 JPEG tagged orientation 6 is a 400x600 portrait: the label map is 600 rows x 400 columns."""
    sam_path, prompter_path = tiny_files
    path = tmp_path / "phone.jpg"
    stored = random_image(400, 600)  # as the sensor stored it: 600 wide, 400 high
    save_with_orientation(path, stored, 6, quality=95)
    assert read_image_rgb(path).shape == (600, 400, 3)
    out = tmp_path / "out"
    code = wps_sam(["predict", str(path), "--out", str(out), "--prompter", str(prompter_path),
                    "--sam-checkpoint", str(sam_path), "--device", "cpu", "--score-threshold", "0.0"])
    assert code == 0
    labels = cv2.imread(str(out / "phone_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (600, 400)
    assert json.loads((out / "phone_parts.json").read_text())["image_size"] == [600, 400]


def test_image_without_exif_is_read_as_stored(tmp_path):
    rgb = random_image(30, 50)
    path = tmp_path / "plain.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    assert np.array_equal(read_image_rgb(path), rgb)
