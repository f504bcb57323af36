"""`wps-sam world --sequence`: clips of the part world with ground-truth track ids (COCO video style)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wps_sam_core.cli import main as wps_sam
from wps_sam_core.data.coco import CocoPartDataset
from wps_sam_core.data.world import MIN_PART_PIXELS, PART_CLASSES
from wps_sam_core.data.world_sequence import MAX_SPEED, render_clip, write_sequences

SIZE, FRAMES = 128, 10


@pytest.fixture(scope="module")
def clips():
    return [render_clip(7, c, FRAMES, SIZE, "val") for c in range(12)]


def test_clips_are_a_pure_function_of_seed_split_and_index():
    a, b = render_clip(7, 3, 4, SIZE, "val"), render_clip(7, 3, 4, SIZE, "val")
    for fa, fb in zip(a, b):
        assert np.array_equal(fa.image, fb.image) and np.array_equal(fa.track_ids, fb.track_ids)
        assert fa.parts == fb.parts
    assert not np.array_equal(render_clip(7, 4, 4, SIZE, "val")[0].image, a[0].image)
    assert not np.array_equal(render_clip(7, 3, 4, SIZE, "test")[0].image, a[0].image)


def test_every_part_keeps_its_class_and_object_and_its_pixels_are_exact(clips):
    for frames in clips:
        identity = {}
        for frame in frames:
            assert frame.image.shape == (SIZE, SIZE, 3) and frame.track_ids.shape == (SIZE, SIZE)
            assert set(np.unique(frame.track_ids)) - {0} == set(frame.parts)
            for track_id, (class_index, obj) in frame.parts.items():
                assert identity.setdefault(track_id, (class_index, obj)) == (class_index, obj)
                assert (frame.track_ids == track_id).sum() >= MIN_PART_PIXELS
                assert 0 <= class_index < len(PART_CLASSES)


def centroid(frame, track_id) -> np.ndarray:
    ys, xs = np.nonzero(frame.track_ids == track_id)
    return np.array([ys.mean(), xs.mean()])


def test_objects_move_and_enter_leave_or_get_occluded(clips):
    moved, entered_or_left, occluded = 0, 0, 0
    for frames in clips:
        seen = [set(f.parts) for f in frames]
        everywhere = set.intersection(*seen)
        steps = [np.linalg.norm(centroid(b, t) - centroid(a, t))
                 for t in everywhere for a, b in zip(frames, frames[1:])]
        moved += bool(steps) and max(steps) > 0.5
        entered_or_left += bool(set.union(*seen) - everywhere)
        areas = {t: [(f.track_ids == t).sum() for f in frames if t in f.parts] for t in everywhere}
        occluded += any(min(a) < 0.6 * max(a) for a in areas.values())
        # realistic speed: a part's centre moves little per frame (translation, rotation, scaling together)
        assert not steps or np.median(steps) < 3 * MAX_SPEED * SIZE
    assert moved == len(clips)  # every clip moves
    assert entered_or_left >= 3 and occluded >= 3, (entered_or_left, occluded)


def test_written_clips_are_a_coco_video_dataset_the_coco_reader_takes(tmp_path):
    summary = write_sequences(tmp_path, 2, 3, 5, SIZE, "val")
    doc = json.loads((tmp_path / "annotations" / "val" / "val.json").read_text())
    assert [v["name"] for v in doc["videos"]] == ["0000", "0001"] and doc["info"]["frames"] == 3
    assert [(im["video_id"], im["frame_id"], im["file_name"]) for im in doc["images"][:4]] == [
        (1, 0, "0000/000000.png"), (1, 1, "0000/000001.png"), (1, 2, "0000/000002.png"), (2, 0, "0001/000000.png")]
    assert (tmp_path / "images" / "val" / "0001" / "000002.png").is_file()
    tracks = {}
    for ann in doc["annotations"]:  # a track lives in one clip, with one class and one object
        video = next(im["video_id"] for im in doc["images"] if im["id"] == ann["image_id"])
        assert tracks.setdefault(ann["track_id"], (video, ann["category_id"], ann["object_track_id"])) == (
            video, ann["category_id"], ann["object_track_id"])
    assert len(tracks) == summary["tracks"] == len(doc["tracks"]) and summary["parts"] == len(doc["annotations"])
    dataset = CocoPartDataset.from_root(tmp_path, "val")  # the frames are part images for eval too
    assert len(dataset) == 6 and dataset.class_names == list(PART_CLASSES)
    again = tmp_path / "again"
    write_sequences(again, 2, 3, 5, SIZE, "val")
    assert (again / "annotations" / "val" / "val.json").read_bytes() == (
        tmp_path / "annotations" / "val" / "val.json").read_bytes()


def test_cli_world_sequence(tmp_path, capsys):
    assert wps_sam(["world", "--sequence", "--frames", "4", "--n", "2", "--size", "96", "--out", str(tmp_path),
                    "--split", "test"]) == 0
    assert "8 images, 2 clips" in capsys.readouterr().out
    assert len(list((tmp_path / "images" / "test" / "0001").glob("*.png"))) == 4


@pytest.mark.parametrize("case, args, message", [
    ("frames-without-sequence", ["--frames", "4"], "--frames needs --sequence"),
    ("frames-1", ["--sequence", "--frames", "1"], "--frames must be in [2, 10000] frames per clip (got 1)"),
    ("sequence-shapes", ["--sequence", "--shapes"], "--sequence and --shapes do not go together"),
])
def test_cli_world_sequence_bad_flags_are_one_line(tmp_path, capsys, case, args, message):
    assert wps_sam(["world", "--n", "2", "--out", str(tmp_path / "w"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wps-sam world: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "w").exists()
