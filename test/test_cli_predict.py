"""`wps-sam predict` end to end as a user runs it (subprocess), and its one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np

from conftest import random_image


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "wps_sam_core.cli", *args], capture_output=True, text=True, timeout=300)


def test_predict_writes_label_overlay_and_json(tiny_files, tmp_path):
    sam_path, prompter_path = tiny_files
    image_path = tmp_path / "scene.png"
    cv2.imwrite(str(image_path), random_image(96, 128)[:, :, ::-1])
    out = tmp_path / "out"
    proc = run_cli("predict", str(image_path), "--prompter", str(prompter_path), "--sam-checkpoint", str(sam_path),
                   "--out", str(out), "--device", "cpu", "--score-threshold", "0.0")
    assert proc.returncode == 0, proc.stderr
    labels = cv2.imread(str(out / "scene_labels.png"), cv2.IMREAD_UNCHANGED)
    overlay = cv2.imread(str(out / "scene_overlay.png"))
    payload = json.loads((out / "scene_parts.json").read_text())
    assert labels.shape == (96, 128) and labels.dtype == np.uint8
    assert overlay.shape[0] == 96 and overlay.shape[1] >= 128
    assert payload["image_size"] == [96, 128]
    present = {i["class_id"] for i in payload["instances"]}
    assert present == set(np.unique(labels)) - {0}
    # the printed line names the parts and the objects they form, as the JSON does
    objects = payload["objects"]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith(f"{image_path}: {len(payload['instances'])} parts (")
    assert all(f"{o['object_class']} #{o['object_id']}: parts " in line for o in objects), (line, objects)


def test_bad_image_is_one_line_error_without_traceback(tiny_files, tmp_path):
    sam_path, prompter_path = tiny_files
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    proc = run_cli("predict", str(bad), "--prompter", str(prompter_path), "--sam-checkpoint", str(sam_path),
                   "--out", str(tmp_path / "o"), "--device", "cpu")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "cannot decode image" in proc.stderr and "broken.png" in proc.stderr
