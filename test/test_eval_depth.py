"""`wps-sam eval --depth`: 3D part-centre errors against the world's GT centres (evaluation/geometry.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wps_sam_core.cli import main as cli_main
from wps_sam_core.data.coco import CocoPartDataset
from wps_sam_core.data.world import PART_CLASSES, write_world
from wps_sam_core.evaluation.geometry import DepthTruth, GeometryMetrics, _GtSegmentation
from wps_sam_core.evaluation.report import depth_markdown

SPLIT = "val"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def depth_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("depth_eval")
    write_world(root, 3, 5, 128, SPLIT, depth_noise=1.0, depth_range=(0.8, 1.2))
    return root


def _dataset(root: Path) -> CocoPartDataset:
    return CocoPartDataset(root / "annotations" / SPLIT / f"{SPLIT}.json", root / "images" / SPLIT)


def test_gt_masks_have_zero_error_on_the_noise_free_depth_and_some_with_noise(depth_world):
    dataset = _dataset(depth_world)
    truth, metrics = DepthTruth(dataset.annotation_file), GeometryMetrics()
    n_parts = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        metrics.add(sample, _GtSegmentation(sample, list(PART_CLASSES)), truth)
        n_parts += len(sample)
    result = metrics.compute()
    assert set(result) == {"noise_free", "sensor_noise"}
    clean, noisy = result["noise_free"], result["sensor_noise"]
    assert clean["matched"] + clean["no_depth"] == n_parts and clean["no_depth"] == 0
    assert clean["p90_m"] < 1e-6  # GT = lift_to_3d of the GT mask on this very depth
    assert 1e-4 < noisy["median_m"] < 0.02  # RealSense-like noise at ~1 m: millimetres, not centimetres
    at_1m = next(b for b in noisy["by_distance"] if b["bin"] == "0.8-1.2 m")
    assert at_1m["matched"] > 0
    table = depth_markdown({"m": {"depth3d": result}})
    assert "| m | noise free |" in table and "| m | sensor noise |" in table


def test_parts_without_depth_are_counted_not_scored(depth_world, tmp_path):
    import shutil

    import cv2

    copy = tmp_path / "world"
    shutil.copytree(depth_world, copy)
    data = json.loads((copy / "annotations" / SPLIT / f"{SPLIT}.json").read_text())
    first = data["images"][0]["camera"]
    cv2.imwrite(str(copy / first["noisy_depth_file"]), np.zeros((128, 128), np.uint16))  # the sensor saw nothing
    dataset = _dataset(copy)
    truth, metrics = DepthTruth(dataset.annotation_file), GeometryMetrics()
    sample = dataset[0]
    metrics.add(sample, _GtSegmentation(sample, list(PART_CLASSES)), truth)
    result = metrics.compute()
    assert result["sensor_noise"]["no_depth"] == len(sample) and result["sensor_noise"]["matched"] == 0
    assert result["noise_free"]["matched"] == len(sample)


def test_eval_depth_cli_writes_errors_per_method_and_variant(depth_world, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert cli_main(["eval", "--data", str(depth_world), "--split", SPLIT, "--methods", "gt_boxes", "prompter",
                     "--depth", "--json", str(out), "--no-progress", "--device", "cpu"]) == 0
    payload = json.loads(out.read_text())
    assert payload["depth3d_gt_masks"]["noise_free"]["p90_m"] < 1e-6
    for name, row in payload["results"].items():
        assert set(row["depth3d"]) == {"noise_free", "sensor_noise"}, name
        for variant in row["depth3d"].values():
            assert variant["matched"] <= row["instances"]["num_gt"]
            assert variant["median_m"] is None or 0 <= variant["median_m"] <= variant["p90_m"]
    assert "## Parts in 3D" in out.with_suffix(".md").read_text()
    assert "| GT masks (depth noise only) | noise free |" in capsys.readouterr().out


def test_eval_depth_on_a_world_without_depth_is_one_line(small_world, tmp_path, capsys):
    assert cli_main(["eval", "--data", str(small_world), "--split", "val", "--depth", "--methods", "gt_boxes",
                     "--json", str(tmp_path / "x.json"), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no image has a 'camera' entry with depth" in err and "\n" not in err
