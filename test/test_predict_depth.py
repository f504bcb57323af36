"""`wps-sam predict --depth ... --intrinsics ...` and viz.overlay_3d: parts in 3D from image files."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import TEST_CLASSES, random_image
from wps_sam_core.cli import main as cli_main
from wps_sam_core.postprocess.geometry3d import CameraIntrinsics, Lifted3D, Part3D, lift_to_3d
from wps_sam_core.segmenter import assemble
from wps_sam_core.viz import overlay, overlay_3d

H, W = 96, 128
K_ARGS = ["--intrinsics", "100", "100", "63.5", "47.5"]


@pytest.fixture
def scene(tmp_path):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), random_image(H, W)[:, :, ::-1])
    depth = np.full((H, W), 1000, np.uint16)
    depth[H // 4: H // 2, W // 5: W // 2] = 800  # the red block is 20 cm nearer
    depth[:, :4] = 0  # no depth at the left border, as a sensor's shadow
    cv2.imwrite(str(tmp_path / "depth.png"), depth)
    return image, tmp_path / "depth.png", depth


def test_predict_with_depth_writes_parts_3d_equal_to_lift_to_3d(tiny_files, scene, tmp_path, capsys):
    sam_path, prompter_path = tiny_files
    image, depth_path, depth = scene
    model = ["--prompter", str(prompter_path), "--sam-checkpoint", str(sam_path), "--device", "cpu",
             "--score-threshold", "0"]
    assert cli_main(["predict", str(image), "--out", str(tmp_path / "out"), "--depth", str(depth_path),
                     *K_ARGS, *model]) == 0
    payload = json.loads((tmp_path / "out" / "scene_parts.json").read_text())
    parts = payload["parts_3d"]["parts"]
    assert parts and len(parts) + len(payload["parts_3d"]["no_depth"]) == len(payload["instances"])
    labels = cv2.imread(str(tmp_path / "out" / "scene_labels.png"), cv2.IMREAD_UNCHANGED)
    instances = cv2.imread(str(tmp_path / "out" / "scene_instances.png"), cv2.IMREAD_UNCHANGED)
    masks = np.array([instances == p["instance_id"] for p in payload["instances"]])
    seg = assemble(masks, np.array([p["class_id"] for p in payload["instances"]]),
                   np.array([p["score"] for p in payload["instances"]]), np.ones(len(masks)), TEST_CLASSES)
    assert np.array_equal(seg.labels, labels)
    expected = lift_to_3d(seg, depth, CameraIntrinsics(100, 100, 63.5, 47.5, W, H), 0.001)
    for got, want in zip(parts, expected.parts):
        assert np.allclose(got["centre_m"], want.centre, atol=1e-5) and 0.8 <= got["centre_m"][2] <= 1.0
    overlay_image = cv2.imread(str(tmp_path / "out" / "scene_overlay.png"))
    assert overlay_image.shape[0] == H * (640 // W)  # upscaled so the z labels are legible


@pytest.mark.parametrize("extra, message", [
    (["--depth", "{depth}"], "--depth needs --intrinsics FX FY CX CY"),
    (["--depth", "{depth}", "{depth}", *K_ARGS], "one depth image per image: 1 images, 2 depth images"),
    (K_ARGS, "--intrinsics and --depth-scale need --depth"),
    (["--depth", "{small}", *K_ARGS], "depth size 64x48 does not match the image size 128x96"),
    (["--depth", "{image}", *K_ARGS], "must be one channel (16UC1 or 32FC1)"),
    (["--depth", "{depth}", "--intrinsics", "0", "100", "63.5", "47.5"], "focal length fx must be a finite number > 0"),
], ids=["no-intrinsics", "count-mismatch", "intrinsics-without-depth", "depth-size", "depth-3-channel", "fx-0"])
def test_bad_depth_inputs_are_one_line_errors(tiny_files, scene, tmp_path, capsys, extra, message):
    sam_path, prompter_path = tiny_files
    image, depth_path, _ = scene
    cv2.imwrite(str(tmp_path / "small.png"), np.ones((48, 64), np.uint16))
    paths = {"depth": str(depth_path), "small": str(tmp_path / "small.png"), "image": str(image)}
    argv = ["predict", str(image), "--out", str(tmp_path / "o"), "--prompter", str(prompter_path),
            "--sam-checkpoint", str(sam_path), "--device", "cpu", "--score-threshold", "0"]
    assert cli_main(argv + [a.format(**paths) for a in extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_overlay_3d_writes_the_z_next_to_each_part():
    image = np.full((60, 80, 3), 90, np.uint8)
    mask = np.zeros((1, 60, 80), bool)
    mask[0, 20:40, 10:30] = True
    seg = assemble(mask, np.array([2]), np.array([0.9]), np.ones(1), TEST_CLASSES)
    part = Part3D(1, 2, "mug_handle", 0.9, (0.0, 0.0, 0.93), (0.1, 0.1, 0.01), 400)
    plain = overlay(np.repeat(np.repeat(image, 2, 0), 2, 1), np.repeat(np.repeat(seg.labels, 2, 0), 2, 1),
                    np.repeat(np.repeat(seg.instance_ids, 2, 0), 2, 1), seg.class_names)
    drawn = overlay_3d(image, seg, Lifted3D([part], []), upscale=2)
    assert drawn.shape == plain.shape and drawn.shape[0] == 120
    changed = np.nonzero((drawn != plain).any(2))
    assert changed[0].size > 200  # a white label box with text, right of the centroid (x = 40, y = 60)
    assert 55 <= np.median(changed[0]) <= 70 and np.median(changed[1]) > 40
    assert (overlay_3d(image, seg, Lifted3D([], [1]), upscale=2) == plain).all()  # no depth: nothing written
