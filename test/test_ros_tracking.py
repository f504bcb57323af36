"""Tracking in the node core (no ROS): with `tracking: true` the instance map and Detection2D.id carry track ids
that stay with a moving part while per-frame instance ids change; a stamp going backwards resets (counted in
/diagnostics, logged); run-time switching and settings; the same code serves the rclpy node, DDS and bags."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from wps_sam_core.embedded import embedded_available
from wps_sam_core.postprocess.tracking import PartObservation, PartTracker, TrackerSettings, with_track_ids
from wps_sam_core.segmenter import assemble
from wps_sam_ros import topics
from wps_sam_ros.core import load_segmenter

from conftest import random_image
from moving_object import FRAME_NS, HAMMER_PARTS, hammer_clip, id_on, ids_on
from test_ros_core import decode, make_core, node_params, raw_msg

T0 = 1_700_000_000 * 10**9


def image_msg(rgb: np.ndarray, stamp_ns: int):
    return raw_msg(rgb, stamp=divmod(stamp_ns, 10**9), frame_id="cam")


def diagnostics(core) -> dict[str, str]:
    return {kv.key: kv.value for kv in core.diagnostics_message().status[0].values}


def check_frame(out) -> tuple[np.ndarray, dict[int, str]]:
    """The published frame is consistent: detection ids = the ids in the instance map, each id's pixels one class."""
    labels, ids = decode(out["masks"]), decode(out["instance_masks"])
    dets = {int(d.id): d.results[0].hypothesis.class_id for d in out["instances"].detections}
    assert len(dets) == len(out["instances"].detections) and 0 not in dets  # unique, never 0
    assert set(dets) == set(np.unique(ids)) - {0}
    assert np.all(labels[ids > 0] > 0)
    for track_id in dets:
        assert np.unique(labels[ids == track_id]).size == 1
    return ids, dets


# ---- the assembly of a tracked frame --------------------------------------------------------------------
def test_with_track_ids_rewrites_ids_leaves_out_unconfirmed_and_keeps_the_label_map():
    masks = np.zeros((3, 8, 8), bool)
    masks[0, :4, :4], masks[1, 4:, 4:], masks[2, :2, 6:] = True, True, True
    seg = assemble(masks, np.array([1, 2, 1]), np.array([0.9, 0.8, 0.7]), np.zeros(3), ["a", "b"])
    tracked = with_track_ids(seg, [7, 0, 65535])
    assert [(i.instance_id, i.class_name) for i in tracked.instances] == [(7, "a"), (65535, "a")]
    assert tracked.labels is seg.labels  # unchanged, and the untracked result is not modified
    assert [i.instance_id for i in seg.instances] == [1, 2, 3] and seg.instance_ids.max() == 3
    expected = np.zeros((8, 8), np.uint16)
    expected[:4, :4], expected[:2, 6:] = 7, 65535
    assert tracked.instance_ids.dtype == np.uint16 and np.array_equal(tracked.instance_ids, expected)
    for inst in tracked.instances:  # each instance's mask is where the map holds its id
        assert np.array_equal(inst.mask, tracked.instance_ids == inst.instance_id)
    with pytest.raises(Exception, match="2 track ids for 3 instances"):
        with_track_ids(seg, [1, 2])
    empty = assemble(np.zeros((0, 4, 4), bool), np.zeros(0, int), np.zeros(0), np.zeros(0), ["a"])
    assert with_track_ids(empty, []).instances == [] and not with_track_ids(empty, []).instance_ids.any()
    trk = PartTracker(TrackerSettings(track_min_hits=1))
    assert trk.update([PartObservation(1, m) for m in masks], 0) == [1, 2, 3]


# ---- a moving object through the core, on the embedded model --------------------------------------------
needs_embedded = pytest.mark.skipif(not embedded_available(), reason="embedded default model not built yet")


@pytest.fixture(scope="module")
def clip_run():
    """The hammer clip through a tracking core and a plain one: per part and frame, its track id, every track
    id on it, and its instance id (each the id on most of its pixels; 0 = none)."""
    segmenter = load_segmenter({**topics.defaults(), "device": "cpu"})
    tracked, plain = make_core(segmenter, tracking=True), make_core(segmenter)
    track_ids = {name: [] for name in HAMMER_PARTS}
    all_track_ids = {name: [] for name in HAMMER_PARTS}
    instance_ids = {name: [] for name in HAMMER_PARTS}
    first = None
    for f, frame in enumerate(hammer_clip()):
        out, ref = (core.process(image_msg(frame.rgb, T0 + f * FRAME_NS)) for core in (tracked, plain))
        ids, dets = check_frame(out)
        assert bytes(out["masks"].data) == bytes(ref["masks"].data)  # the label map does not depend on tracking
        if f == 0:
            first = dets
        for name, part in frame.parts.items():
            track_ids[name].append(id_on(part, ids))
            all_track_ids[name].append(ids_on(part, ids))
            instance_ids[name].append(id_on(part, decode(ref["instance_masks"])))
            if track_ids[name][-1]:
                assert dets[track_ids[name][-1]] == name  # the detection with that id is of the part's class
    return tracked, track_ids, all_track_ids, instance_ids, first


@needs_embedded
def test_a_moving_objects_parts_keep_their_track_ids_while_instance_ids_change(clip_run):
    core, track_ids, all_track_ids, instance_ids, first = clip_run
    print(f"\ntrack ids {track_ids}\nall track ids {all_track_ids}\ninstance ids without tracking {instance_ids}")
    # track_min_hits 1 (the default): the parts are published from the first frame on, under one id each
    head, handle = track_ids["hammer_head"], track_ids["hammer_handle"]
    assert first.get(head[0]) == "hammer_head" and set(head) == {head[0]}, head
    # what tracking fixes: by score rank alone the head is announced under changing ids
    assert all(instance_ids["hammer_head"]) and len(set(instance_ids["hammer_head"])) > 1, instance_ids
    # the handle keeps its id in every frame (a second fragment of it, when the model splits it, gets its own)
    assert handle[0] > 0 and handle[0] != head[0]
    assert all(handle[0] in ids for ids in all_track_ids["hammer_handle"]), all_track_ids
    values = diagnostics(core)
    assert values["tracking"] == "on" and int(values["tracks_confirmed"]) >= 2 and values["tracker_resets"] == "0"


@needs_embedded
def test_a_stamp_going_backwards_resets_counts_and_logs(clip_run, caplog):
    core, _, all_track_ids, _, _ = clip_run
    old = set().union(*(ids[-1] for ids in all_track_ids.values()))
    clip = hammer_clip()
    with caplog.at_level(logging.INFO, logger="wps_sam_core"):
        again = core.process(image_msg(clip[0].rgb, T0))  # the bag loops: back to the first stamp
    ids, _ = check_frame(again)  # tracks start over: each part gets an id never used before the reset
    restarted = {id_on(part, ids) for part in clip[0].parts.values()}
    assert 0 not in restarted and not restarted & old and min(restarted) > max(old)
    values = diagnostics(core)
    assert values["tracker_resets"] == "1" and values["tracker_resets (time jumped backwards)"] == "1"
    assert "backwards" in values["tracker_last_reset"]
    assert values["tracker_resets (gap longer than track_reset_s)"] == "0"
    assert any("part tracker reset" in r.getMessage() and "backwards" in r.getMessage() for r in caplog.records)
    ids, _ = check_frame(core.process(image_msg(clip[1].rgb, T0 + FRAME_NS)))
    assert {id_on(part, ids) for part in clip[1].parts.values()} == restarted  # and keep them


# ---- run-time parameters, on the tiny model (a still image: every frame the same parts) -------------------
@pytest.fixture(scope="module")
def tiny_segmenter(tiny_files):
    return load_segmenter(node_params(tiny_files))


def ids_of(out) -> list[int]:
    return [int(d.id) for d in out["instances"].detections]


def test_tracking_switches_at_run_time_and_starts_afresh(tiny_segmenter):
    core = make_core(tiny_segmenter, tracker_settings=TrackerSettings(track_min_hits=1))
    rgb = random_image(48, 64, 3)
    frame = iter(range(100))

    def step():
        return core.process(image_msg(rgb, T0 + next(frame) * FRAME_NS))

    per_frame = ids_of(step())
    assert per_frame == list(range(1, len(per_frame) + 1)) and diagnostics(core)["tracking"] == "off"
    assert "tracks_confirmed" not in diagnostics(core)
    assert core.set_parameters({"tracking": True}) == (True, "")
    first = ids_of(step())
    assert len(first) == len(per_frame) and ids_of(step()) == first  # the same parts keep their ids
    assert core.set_parameters({"track_min_hits": 3, "track_max_age": 0, "track_match_iou": 0.9,
                                "track_reset_s": 0.5}) == (True, "")
    assert core.tracker.settings == TrackerSettings(0.9, 0, 3, 0.5)
    assert ids_of(step()) == first  # new settings, same tracks
    assert core.set_parameters({"tracking": False}) == (True, "")
    assert ids_of(step()) == per_frame and diagnostics(core)["tracking"] == "off"
    assert core.set_parameters({"tracking": True, "track_min_hits": 1}) == (True, "")
    again = ids_of(step())
    assert again and min(again) > max(first)  # switched on again: old tracks dropped, ids never reused
    values = diagnostics(core)
    assert values["tracker_resets (reset by caller)"] == "1" and "switched on" in values["tracker_last_reset"]
    assert core.set_parameters({"tracking": True}) == (True, "")  # already on: nothing happens
    assert ids_of(step()) == again and diagnostics(core)["tracker_resets"] == "1"


@pytest.mark.parametrize("changes, fragment", [
    ({"track_match_iou": 0.0, "score_threshold": 0.3}, "track_match_iou must be in [0.01, 1], got 0.0"),
    ({"track_max_age": -1}, "track_max_age must be in [0, 10000], got -1"),
    ({"track_min_hits": 2.5}, "parameter track_min_hits: expected int, got 2.5"),
    ({"track_reset_s": float("nan")}, "track_reset_s must be in [0, 3600], got nan"),
    ({"tracking": "yes", "track_min_hits": 1}, "parameter tracking: expected bool, got 'yes'"),
], ids=["match-iou-0", "max-age-negative", "min-hits-float", "reset-nan", "tracking-str"])
def test_bad_tracking_parameters_are_refused_whole(tiny_segmenter, changes, fragment):
    core = make_core(tiny_segmenter)
    before, settings_before = core.tracker.settings, tiny_segmenter.settings
    ok, reason = core.set_parameters(changes)
    assert not ok and fragment in reason and "\n" not in reason
    assert core.tracker.settings == before and tiny_segmenter.settings == settings_before and not core.tracking


def test_unstamped_frames_are_tracked_without_a_reset(tiny_segmenter):
    """A camera that does not stamp (header.stamp 0 on every frame): equal stamps are no time jump."""
    core = make_core(tiny_segmenter, tracking=True)
    rgb = random_image(48, 64, 4)
    runs = [ids_of(core.process(image_msg(rgb, 0))) for _ in range(4)]
    assert runs[0] and runs[0] == runs[1] == runs[2] == runs[3]
    assert diagnostics(core)["tracker_resets"] == "0"


def test_bad_tracking_flag_is_one_line_and_writes_nothing(tmp_path, capsys):
    from wps_sam_core.cli import main as wps_sam

    src = tmp_path / "in"
    src.mkdir()
    assert wps_sam(["bag", str(src), str(tmp_path / "out"), "--image-topic", "/camera/image_raw", "--tracking",
                    "--track-min-hits", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "wps-sam bag: error: --track-min-hits: track_min_hits must be in [1, 1000] frames, got 0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
