"""The world's depth (`wps-sam world --depth`): 2D unchanged, GT centres = lift_to_3d's on the clean depth,
parts in front of their body, sensor-like noise, K, bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from wps_sam_core.cli import main as cli_main
from wps_sam_core.data.world import PART_CLASSES, render_scene, write_world
from wps_sam_core.data.world_depth import (
    DEPTH_STREAM, HFOV_DEG, camera_intrinsics, depth_rng, read_depth, render_depth,
)
from wps_sam_core.errors import WpsSamError
from wps_sam_core.postprocess.geometry3d import CameraIntrinsics, instance_centres

SEED, SPLIT, N = 3, "test", 6
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("depth_world")
    write_world(root / "plain", N, SEED, split=SPLIT)
    write_world(root / "depth", N, SEED, split=SPLIT, depth_noise=1.0)
    return root / "plain", root / "depth"


def _json(root: Path) -> dict:
    return json.loads((root / "annotations" / SPLIT / f"{SPLIT}.json").read_text())


def test_depth_leaves_the_2d_world_byte_identical(worlds):
    plain, depth = worlds
    for image in sorted((plain / "images" / SPLIT).iterdir()):
        assert image.read_bytes() == (depth / "images" / SPLIT / image.name).read_bytes()
    a, b = _json(plain), _json(depth)
    for ann in b["annotations"]:
        assert len(ann.pop("centre_3d_m")) == 3 and min(ann.pop("size_3d_m")) >= 0
    for image in b["images"]:
        assert image.pop("camera")["depth_unit_m"] == 0.001
    assert a == b


def test_camera_entry_and_gt_centres_follow_lift_to_3d_on_the_clean_depth(worlds):
    _, root = worlds
    data = _json(root)
    for image in data["images"]:
        camera = image["camera"]
        k = CameraIntrinsics.from_matrix(camera["K"], image["width"], image["height"])
        assert abs(k.cx - (image["width"] - 1) / 2) < 1e-9
        assert 2 * np.degrees(np.arctan(image["width"] / 2 / k.fx)) == pytest.approx(HFOV_DEG, abs=1e-3)
        depth = read_depth(root / camera["depth_file"], (image["height"], image["width"]))
        noisy = read_depth(root / camera["noisy_depth_file"], depth.shape)
        assert (depth > 0).all() and (noisy == 0).any()  # noise-free: every pixel has a depth
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        ids = np.zeros(depth.shape, np.int32)
        for i, ann in enumerate(anns, start=1):
            ids[mask_utils.decode(dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())) > 0] = i
        centre, size, _ = instance_centres(ids, range(1, len(anns) + 1), depth, k, 0.001)
        for ann, c, s in zip(anns, centre, size):
            assert np.allclose(ann["centre_3d_m"], c, atol=1e-6) and np.allclose(ann["size_3d_m"], s, atol=1e-6)
            assert 0.3 < ann["centre_3d_m"][2] < 3.2  # objects in 0.4-3 m, parts a few cm off their body


def test_a_mug_handle_is_one_to_three_centimetres_in_front_of_its_body():
    steps = []
    for index in range(60):
        scene = render_scene(SEED, index, 256, SPLIT)
        depth = render_depth(scene, camera_intrinsics(256), depth_rng(SEED, SPLIT, index, DEPTH_STREAM))
        cls = np.array([-1] + [p.class_index for p in scene.parts])[scene.part_ids]
        obj = np.array([-1] + [p.object_index for p in scene.parts])[scene.part_ids]
        handle, body = PART_CLASSES.index("mug_handle"), PART_CLASSES.index("mug_body")
        for near, far in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),  # left/right neighbours
                          ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):  # up/down
            same_object = obj[near] == obj[far]
            for first, second in ((near, far), (far, near)):
                pair = (cls[first] == handle) & (cls[second] == body) & same_object
                steps.extend((depth[second] - depth[first])[pair])  # body minus handle
    assert len(steps) > 20
    assert 0.009 <= np.median(steps) <= 0.031  # body minus handle: the handle is nearer


def test_sensor_noise_is_realsense_like(worlds):
    _, root = worlds
    data = _json(root)
    rel, missing = [], []
    for image in data["images"]:
        clean = read_depth(root / image["camera"]["depth_file"]).astype(np.float64)
        noisy = read_depth(root / image["camera"]["noisy_depth_file"]).astype(np.float64)
        flat = cv2.dilate(clean, np.ones((3, 3))) - cv2.erode(clean, np.ones((3, 3))) < 0.01 * clean
        valid = flat & (noisy > 0)
        rel.extend((np.abs(noisy - clean) / clean)[valid])
        missing.append((noisy == 0).mean())
    assert 0.001 <= np.median(rel) <= 0.01  # sigma 0.3-0.7 % of z; median |error| ~ 0.67 sigma
    assert 0.01 <= np.mean(missing) <= 0.2


@pytest.mark.parametrize("argv, message", [
    (["--depth", "--depth-range", "0.05", "1"], "--depth-range must be NEAR FAR metres"),
    (["--depth", "--depth-range", "2", "1"], "--depth-range must be NEAR FAR metres"),
    (["--depth-range", "0.5", "1"], "--depth-range needs --depth"),
    (["--depth-noise", "-1"], "--depth-noise must be a noise level in [0, 10]"),
    (["--depth", "--shapes"], "--depth/--depth-noise are for the part world and its clips, not --shapes"),
], ids=["near-too-small", "near-past-far", "range-without-depth", "noise-negative", "depth-shapes"])
def test_bad_depth_flags_are_one_line_errors(argv, message, tmp_path, capsys):
    assert cli_main(["world", "--out", str(tmp_path), "--n", "1", *argv]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_clips_get_depth_consistent_over_frames_and_2d_unchanged(tmp_path):
    from wps_sam_core.data.world_sequence import write_sequences

    write_sequences(tmp_path / "plain", 2, 5, SEED, 128, SPLIT)
    write_sequences(tmp_path / "depth", 2, 5, SEED, 128, SPLIT, depth_noise=1.0)
    a, b = _json(tmp_path / "plain"), _json(tmp_path / "depth")
    z_of_track: dict[int, list[float]] = {}
    for image in b["images"]:
        camera = image.pop("camera")
        depth = read_depth(tmp_path / "depth" / camera["depth_file"], (128, 128))
        assert (read_depth(tmp_path / "depth" / camera["noisy_depth_file"]) == 0).any()
        anns = [x for x in b["annotations"] if x["image_id"] == image["id"]]
        ids = np.zeros(depth.shape, np.int32)
        for i, ann in enumerate(anns, start=1):
            ids[mask_utils.decode(dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())) > 0] = i
        k = CameraIntrinsics.from_matrix(camera["K"], 128, 128)
        centre, _, _ = instance_centres(ids, range(1, len(anns) + 1), depth, k, 0.001)
        for ann, c in zip(anns, centre):
            assert np.allclose(ann["centre_3d_m"], c, atol=1e-6)
            z_of_track.setdefault(ann["track_id"], []).append(ann["centre_3d_m"][2])
    for ann in b["annotations"]:
        del ann["centre_3d_m"], ann["size_3d_m"]
    assert a == b  # the clips' 2D annotations are untouched ...
    for image in sorted((tmp_path / "plain" / "images" / SPLIT).rglob("*.png")):  # ... and so are the frames
        assert image.read_bytes() == (tmp_path / "depth" / image.relative_to(tmp_path / "plain")).read_bytes()
    steps = [abs(b - a) for zs in z_of_track.values() for a, b in zip(zs, zs[1:])]
    assert steps and np.median(steps) < 0.03  # one plan per clip: a part keeps its distance as it moves


def test_read_depth_refuses_what_is_not_16uc1(tmp_path):
    cv2.imwrite(str(tmp_path / "eight.png"), np.zeros((4, 4), np.uint8))
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((4, 5), np.uint16))
    for path, shape, message in ((tmp_path / "none.png", None, "cannot read depth image"),
                                 (tmp_path / "eight.png", None, "must be a single-channel 16-bit PNG"),
                                 (tmp_path / "ok.png", (4, 4), "is 5x4, the image is 4x4")):
        with pytest.raises(WpsSamError, match=message):
            read_depth(path, shape)
