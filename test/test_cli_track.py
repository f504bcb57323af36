"""`wps-sam track` over a folder of frames: ids stay with their part, the outputs agree with each other, bad inputs
are one line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wps_sam_core.cli import main as wps_sam
from wps_sam_core.embedded import embedded_available
from wps_sam_core.image_io import read_image_rgb, write_png

from conftest import random_image
from moving_object import hammer_clip, id_on


def tiny_args(tiny_files) -> list[str]:
    sam_path, prompter_path = tiny_files
    return ["--prompter", str(prompter_path), "--sam-checkpoint", str(sam_path), "--device", "cpu",
            "--score-threshold", "0"]


def read_ids(path) -> np.ndarray:
    import cv2

    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert ids is not None and ids.dtype == np.uint16
    return ids


@pytest.mark.skipif(not embedded_available(), reason="embedded default model not built yet")
def test_track_keeps_the_heads_id_over_a_folder_of_frames(tmp_path, capsys):
    clip = hammer_clip()
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(clip):  # frame0, frame5, ..., frame35: natural order, not 'frame10' < 'frame5'
        write_png(frames / f"frame{5 * i}.png", frame.rgb)
    (frames / "notes.txt").write_text("not a frame")
    out = tmp_path / "out"
    assert wps_sam(["track", str(frames), "--out", str(out), "--device", "cpu", "--track-min-hits", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    order = [str(frames / f"frame{5 * i}.png") for i in range(len(clip))]
    assert [line.split(":")[0] for line in printed[:-1]] == order
    assert printed[-1].startswith(f"{len(clip)} frames, ") and "0 tracker resets" in printed[-1]
    head, rows = [], []
    for i, frame in enumerate(clip):
        stem = f"frame{5 * i}"
        ids = read_ids(out / f"{stem}_tracks.png")
        labels = read_image_rgb(out / f"{stem}_labels.png")[..., 0]
        parts = json.loads((out / f"{stem}_parts.json").read_text())
        assert parts["frame"] == i and parts["time_s"] == pytest.approx(i / 10) and parts["reset"] is None
        listed = {p["instance_id"]: p["class_name"] for p in parts["instances"]}
        assert set(listed) == set(np.unique(ids)) - {0} and np.all(labels[ids > 0] > 0)
        head.append(id_on(frame.parts["hammer_head"], ids))
        assert head[-1] == 0 or listed[head[-1]] == "hammer_head"
        rows += [(i + 1, track_id) for track_id in listed]
    assert head[0] == 0 and head[1] > 0 and set(head[1:]) == {head[1]}, head
    mot = [line.split(",") for line in (out / "tracks.txt").read_text().splitlines()]
    assert sorted((int(r[0]), int(r[1])) for r in mot) == sorted(rows)  # MOTChallenge rows: frame (from 1), id, box
    assert all(len(r) == 10 and float(r[4]) > 0 and float(r[5]) > 0 for r in mot)
    summary = json.loads((out / "tracks.json").read_text())
    assert summary["resets"] == 0 and summary["tracker"]["track_min_hits"] == 2
    by_id = {t["track_id"]: t for t in summary["tracks"]}
    assert set(by_id) == {track_id for _, track_id in rows}
    assert by_id[head[1]]["class_name"] == "hammer_head" and by_id[head[1]]["first_frame"] == 1
    assert by_id[head[1]]["frames"] == len(clip) - 1 == by_id[head[1]]["last_frame"]


def test_a_frame_of_another_size_resets_the_tracker_and_says_so(tmp_path, tiny_files, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        write_png(frames / f"{i}.png", random_image(48, 64, 1) if i < 2 else random_image(40, 64, 1))
    assert wps_sam(["track", str(frames), "--out", str(tmp_path / "out"), "--track-min-hits", "1",
                    *tiny_args(tiny_files)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "tracker reset: image size changed: (48, 64) -> (40, 64)" in printed[2]
    assert "1 tracker resets" in printed[-1]
    summary = json.loads((tmp_path / "out" / "tracks.json").read_text())
    assert summary["resets_by_reason"]["image size changed"] == 1
    first = set(np.unique(read_ids(tmp_path / "out" / "1_tracks.png"))) - {0}
    after = set(np.unique(read_ids(tmp_path / "out" / "2_tracks.png"))) - {0}
    assert first and after and min(after) > max(first)  # new ids after the reset


@pytest.mark.parametrize("case", ["empty-folder", "fps-0", "same-stem", "bad-frame", "track-max-age-negative"])
def test_track_bad_inputs_are_one_line(tmp_path, tiny_files, capsys, case):
    frames = tmp_path / "frames"
    frames.mkdir()
    args = [str(frames)]
    if case != "empty-folder":
        write_png(frames / "a.png", random_image(32, 32))
    if case == "fps-0":
        args += ["--fps", "0"]
    elif case == "same-stem":
        write_png(frames / "b.png", random_image(32, 32))
        args = [str(frames / "a.png"), str(frames / "b.png"), str(frames / "a.png")]
    elif case == "bad-frame":
        (frames / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    elif case == "track-max-age-negative":
        args += ["--track-max-age", "-1"]
    assert wps_sam(["track", *args, "--out", str(tmp_path / "out"), *tiny_args(tiny_files)]) == 2
    err = capsys.readouterr().err
    expected = {
        "empty-folder": f"no image files (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp) in {frames}",
        "fps-0": "--fps must be a positive number of frames per second, got 0.0",
        "same-stem": f"two frames would write the same outputs (a_*): {frames / 'a.png'} and {frames / 'a.png'}",
        "bad-frame": f"cannot decode image (truncated or not an image): {frames / 'b.png'}",
        "track-max-age-negative": "--track-max-age: track_max_age must be >= 0 frames, got -1",
    }[case]
    assert err == f"wps-sam track: error: {expected}\n"
