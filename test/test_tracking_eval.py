"""Tracking metrics (evaluation/tracking.py, py-motmetrics): hand-computed cases, and `wps-sam track-eval` on world
clips end to end."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("motmetrics", reason="py-motmetrics (pip, train extra) not installed")

import motmetrics as mm  # noqa: E402

from wps_sam_core.cli import main as wps_sam  # noqa: E402
from wps_sam_core.embedded import embedded_available  # noqa: E402
from wps_sam_core.errors import WpsSamError  # noqa: E402
from wps_sam_core.evaluation.tracking import (  # noqa: E402
    ClipFrames, GtPart, add_frame, distances, load_clips, score_tracking, summarise,
)


def box(y: int, x: int, size: int = 10) -> np.ndarray:
    mask = np.zeros((40, 60), bool)
    mask[y:y + size, x:x + size] = True
    return mask


def run(frames) -> dict:
    """frames: per frame (GT parts, hypotheses (id, class, mask)) -> the summary over one clip."""
    acc = mm.MOTAccumulator(auto_id=True)
    for gt, hyp in frames:
        add_frame(acc, gt, hyp)
    return summarise([acc], ["clip"])


def test_an_id_switch_costs_what_idf1_and_mota_say():
    # one GT part over 4 frames, announced as id 1 in frames 0-1 and as id 2 in frames 2-3
    frames = [([GtPart(7, "mug_handle", box(5, 5 + 3 * f))], [(1 if f < 2 else 2, "mug_handle", box(5, 5 + 3 * f))])
              for f in range(4)]
    r = run(frames)
    # IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN): the best one-to-one pairing (GT 7 <-> id 1) is right in 2 of 4 frames
    assert r["idf1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    assert r["num_switches"] == 1 and r["mota"] == pytest.approx(1 - 1 / 4)  # MOTA = 1 - (FN + FP + IDSW) / GT
    assert (r["recall"], r["precision"], r["num_objects"], r["num_unique_objects"]) == (1.0, 1.0, 4, 1)
    steady = run([(gt, [(1, c, m) for _, c, m in hyp]) for gt, hyp in frames])
    assert (steady["idf1"], steady["mota"], steady["num_switches"]) == (1.0, 1.0, 0)


def test_a_match_needs_the_class_and_mask_iou_of_one_half():
    gt = [GtPart(1, "mug_handle", box(5, 5))]
    shifted = box(5, 8)  # IoU 70 / 130 = 0.54
    assert distances(gt, [("mug_handle", shifted)])[0, 0] == pytest.approx(1 - 70 / 130)
    assert np.isnan(distances(gt, [("mug_body", box(5, 5))])[0, 0])  # another class never matches
    assert np.isnan(distances(gt, [("mug_handle", box(5, 10))])[0, 0])  # IoU 50 / 150 < 0.5
    r = run([(gt, [(3, "mug_body", box(5, 5))])])
    assert (r["num_misses"], r["num_false_positives"], r["mota"]) == (1, 1, -1.0)
    assert distances([], [("a", box(0, 0))]).shape == (0, 1) and distances(gt, []).shape == (1, 0)


def test_box_criterion_matches_what_the_mask_criterion_refuses():
    gt = [GtPart(1, "mug_handle", box(5, 5))]
    ring = box(5, 5) & ~box(7, 7, size=6)  # the part's outline only: 64 of 100 px, the same box
    assert np.isnan(distances(gt, [("mug_handle", box(5, 5) & ~box(5, 5, size=8))])[0, 0])  # IoU 36 / 100
    assert distances(gt, [("mug_handle", ring)], "mask")[0, 0] == pytest.approx(1 - 64 / 100)
    assert distances(gt, [("mug_handle", box(5, 5) & ~box(5, 5, size=8))], "box")[0, 0] == pytest.approx(0.0)
    assert np.isnan(distances(gt, [("mug_body", ring)], "box")[0, 0])  # still class-gated


def test_missed_parts_are_put_down_to_their_cause():
    from wps_sam_core.postprocess.tracking import TrackerSettings
    from wps_sam_core.segmenter import assemble

    def frame(masks):
        return {"gt_masks": assemble(np.array(masks, bool).reshape(-1, 40, 60), np.ones(len(masks), int),
                                     np.ones(len(masks)), np.ones(len(masks)), ["mug_handle"])}

    # GT part 7 over 4 frames: frame 0 its first (warm-up with track_min_hits 2), frame 1 confirmed, frame 2 no
    # mask at all, frame 3 a mask far from the track's (box IoU 0: a new tentative track = restarted)
    gt = [[GtPart(7, "mug_handle", m)] for m in (box(5, 5), box(5, 6), box(5, 7), box(25, 45))]
    masks = [[box(5, 5)], [box(5, 6)], [], [box(25, 45)]]
    clip = ClipFrames("c", [(Path(f"{i}.png"), g) for i, g in enumerate(gt)])
    report = score_tracking([clip], [[frame(m) for m in masks]], TrackerSettings(track_min_hits=2))
    r = report["methods"]["gt_masks"]["tracker"]
    assert r["num_misses"] == 3 and r["num_objects"] == 4
    assert r["fn_causes"] == {"no_mask": 1, "warm_up": 1, "track_restarted": 1, "other": 0}
    per_frame = report["methods"]["gt_masks"]["per_frame_ids"]
    assert per_frame["num_misses"] == 1 and "fn_causes" not in per_frame
    assert report["methods"]["gt_masks"]["box"]["tracker"]["fn_causes"]["no_mask"] == 1


def test_a_still_world_is_not_a_video_dataset(small_world):
    with pytest.raises(WpsSamError, match="not a COCO video dataset .* wps-sam world --sequence"):
        load_clips(small_world / "annotations" / "train" / "train.json", small_world / "images" / "train")


@pytest.mark.skipif(not embedded_available(), reason="embedded default model not built yet")
def test_track_eval_on_world_clips(tmp_path, capsys):
    assert wps_sam(["world", "--sequence", "--frames", "5", "--n", "2", "--out", str(tmp_path / "w"),
                    "--split", "val", "--seed", "1"]) == 0
    out = tmp_path / "report.json"
    assert wps_sam(["track-eval", "--data", str(tmp_path / "w"), "--split", "val", "--json", str(out),
                    "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "| mask | SAM + GT boxes | tracker |" in printed and "| box | SAM + GT boxes | tracker |" in printed
    assert "2 clips, 10 frames" in printed
    report = json.loads(out.read_text())
    doc = json.loads((tmp_path / "w" / "annotations" / "val" / "val.json").read_text())
    assert (report["clips"], report["frames"]) == (2, 10) and report["tracker"]["track_min_hits"] == 1
    for method in ("gt_masks", "gt_boxes", "prompter"):
        for scheme, criterion in itertools.product(("tracker", "per_frame_ids"), ("mask", "box")):
            result = report["methods"][method]
            r = (result if criterion == "mask" else result[criterion])[scheme]
            assert r["idf1"] == pytest.approx(2 * r["idtp"] / max(1, 2 * r["idtp"] + r["idfp"] + r["idfn"]), abs=1e-6)
            assert 0 <= r["hota"] <= 1 and 0 <= r["deta"] <= 1 and 0 <= r["assa"] <= 1
            assert r["num_objects"] == len(doc["annotations"]) and r["num_unique_objects"] == len(doc["tracks"])
            assert 0 <= r["recall"] <= 1 and r["idf1"] <= 1  # motmetrics counts a switch apart from a match:
            assert r["num_matches"] + r["num_switches"] + r["num_misses"] == r["num_objects"]
    gt_masks = report["methods"]["gt_masks"]  # the exact masks: every shown part is right; per frame all are shown
    assert gt_masks["tracker"]["precision"] == 1.0 and gt_masks["per_frame_ids"]["recall"] == 1.0
    assert gt_masks["tracker"]["num_false_positives"] == 0
    gt_boxes = report["methods"]["gt_boxes"]
    assert gt_boxes["tracker"]["num_switches"] <= gt_boxes["per_frame_ids"]["num_switches"]
    assert out.with_suffix(".md").read_text().startswith("| match | method | ids | IDF1 | HOTA |")
    causes = gt_masks["tracker"]["fn_causes"]  # the exact masks: every GT part has a mask; nothing is unexplained
    assert causes["no_mask"] == 0 and sum(causes.values()) == gt_masks["tracker"]["num_misses"]


@pytest.mark.parametrize("case", ["not-video", "max-clips-negative", "unknown-method"])
def test_track_eval_bad_inputs_are_one_line(tmp_path, small_world, capsys, case):
    data, extra = tmp_path / "w", []
    if case == "not-video":
        data = small_world
        extra = ["--split", "train"]
    else:
        assert wps_sam(["world", "--sequence", "--frames", "2", "--n", "1", "--size", "64", "--out", str(data),
                        "--split", "val"]) == 0
        extra = ["--max-clips", "-1"] if case == "max-clips-negative" else ["--methods", "gt_boxes,gt_points"]
    capsys.readouterr()
    assert wps_sam(["track-eval", "--data", str(data), "--json", str(tmp_path / "r.json"), "--device", "cpu",
                    *extra]) == 2
    err = capsys.readouterr().err
    expected = {"not-video": "not a COCO video dataset (images need video_id and frame_id, annotations track_id); "
                             "write clips with wps-sam world --sequence",
                "max-clips-negative": "--max-clips must be >= 0 (0 = all), got -1",
                "unknown-method": "unknown tracking evaluation methods ['gt_points']; known: ['gt_masks', 'gt_boxes', "
                                  "'prompter']"}
    assert err.startswith("wps-sam track-eval: error: ") and expected[case] in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()
