"""PartTracker: ids stay with their part (motion, crossing, occlusion), resets, min_hits, id allocation."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wps_sam_core.errors import WpsSamError
from wps_sam_core.postprocess.tracking import (
    MAX_TRACK_ID, RESET_BACKWARDS, RESET_GAP, RESET_IMAGE_SIZE, PartObservation, PartTracker, TrackerSettings,
)

SHAPE = (96, 160)
FRAME_NS = 33_333_333  # 30 Hz


def square(y: int, x: int, size: int = 20, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[max(y, 0):max(y + size, 0), max(x, 0):max(x + size, 0)] = True
    return mask


def part(mask: np.ndarray, class_id: int = 1) -> PartObservation:
    return PartObservation(class_id, mask)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def tracker(**settings) -> PartTracker:
    return PartTracker(TrackerSettings(**{"track_min_hits": 1, **settings}))


def test_one_moving_part_keeps_its_id_over_20_frames():
    trk = tracker()
    ids = [trk.update([part(square(10 + i, 5 + 5 * i))], i * FRAME_NS)[0] for i in range(20)]
    assert ids[0] > 0 and set(ids) == {ids[0]}


def crossing_masks(frame: int, resolve_overlap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two parts of one class, A moving right and B left at 10 px/frame, a little apart vertically;
    they overlap at frames 5-6 and swap sides between them. With `resolve_overlap` A hides B's pixels
    (as the segmenter's visible masks do)."""
    a, b = square(20, 5 + 10 * frame), square(26, 115 - 10 * frame)
    return a, (b & ~a if resolve_overlap else b)


@pytest.mark.parametrize("resolve_overlap", [False, True])
def test_two_crossing_parts_of_one_class_keep_their_ids(resolve_overlap):
    # It is a real crossing: right after it, each track's last mask overlaps the OTHER part's mask more
    # than its own, so matching on the last masks (greedy or Hungarian, without motion) swaps the ids.
    prev_a, prev_b = crossing_masks(5, resolve_overlap=False)
    cur_a, cur_b = crossing_masks(6, resolve_overlap=False)
    assert (prev_a & prev_b).any() and (cur_a & cur_b).any()
    assert iou(prev_a, cur_b) > iou(prev_a, cur_a) and iou(prev_b, cur_a) > iou(prev_b, cur_b)

    trk = tracker()
    history = []
    for frame in range(12):
        a, b = crossing_masks(frame, resolve_overlap)
        order = (0, 1) if frame % 2 else (1, 0)  # the instance order changes too (by score, in the segmenter)
        masks = [(a, b)[k] for k in order]
        ids = trk.update([part(m) for m in masks], frame * FRAME_NS)
        history.append((ids[order.index(0)], ids[order.index(1)]))
    ids_a, ids_b = {h[0] for h in history}, {h[1] for h in history}
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b, history


def bar(y: int, x: int, length: int, width: int, vertical: bool, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A thin upright or lying part (a leg, a handle) `length` x `width` px with its top-left corner at (y, x)."""
    mask = np.zeros(shape, bool)
    h, w = (length, width) if vertical else (width, length)
    mask[y:y + h, x:x + w] = True
    return mask


def stick(cy: float, cx: float, length: float, width: float, degrees: float) -> np.ndarray:
    """A thin part centred at (cy, cx), turned `degrees` from lying."""
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    angle = np.radians(degrees)
    along = (yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
    across = (yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)
    return (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    from wps_sam_core.evaluation.tracking import box_iou as boxes_iou, mask_box

    return float(boxes_iou(mask_box(a)[None], mask_box(b)[None])[0, 0])


def test_a_thin_part_that_turns_keeps_its_id_through_the_box_stage():
    # a 36 x 4 px leg turning 30 degrees a frame about its centre: consecutive masks overlap too little for the
    # mask stage (IoU about 0.14 < match_iou), their boxes enough for the box stage (IoU >= 0.1)
    legs = [stick(48, 80, 36, 4, 30 * k) for k in range(4)]
    for before, after in zip(legs, legs[1:]):
        assert iou(before, after) < 0.3 < TrackerSettings().match_iou and box_iou(before, after) >= 0.1
    trk = tracker()
    ids = [trk.update([part(leg)], k * FRAME_NS)[0] for k, leg in enumerate(legs)]
    assert ids[0] > 0 and set(ids) == {ids[0]}, ids
    # a part of another class, or one whose box hardly overlaps, is still a new track
    assert trk.update([part(legs[-1], class_id=2)], 4 * FRAME_NS)[0] not in (0, ids[0])
    away = stick(48, 80 + 34, 36, 4, 0)
    assert box_iou(legs[-1], away) < 0.1 and trk.update([part(away)], 5 * FRAME_NS)[0] not in (0, ids[0])


def test_mask_iou_goes_first_for_parts_of_one_class_side_by_side():
    # two legs 6 px apart: each one's box overlaps its neighbour's enough for the box stage, but the mask stage
    # pairs them first by their own masks, so they never swap ids while they step (alternating lengths)
    trk = tracker()
    history = []
    for frame in range(8):
        legs = [bar(30, 50, 30 - 4 * (frame % 2), 4, vertical=True), bar(30, 56, 26 + 4 * (frame % 2), 4, vertical=True)]
        ids = trk.update([part(m) for m in legs[::(-1) ** frame]], frame * FRAME_NS)[::(-1) ** frame]
        history.append(tuple(ids))
    assert len(set(history)) == 1 and 0 not in history[0] and history[0][0] != history[0][1], history


def test_other_class_never_takes_a_track():
    trk = tracker()
    first = trk.update([part(square(10, 10), class_id=1)], 0)[0]
    second = trk.update([part(square(10, 10), class_id=2)], FRAME_NS)[0]
    assert first > 0 and second > 0 and second != first


@pytest.mark.parametrize("speed", [0, 4])
def test_a_part_missing_for_up_to_max_age_frames_comes_back_with_its_id(speed):
    trk = tracker(track_max_age=3)
    seen = {frame: trk.update([part(square(30, 10 + speed * frame))], frame * FRAME_NS)[0] for frame in range(4)}
    for frame in range(4, 7):  # 3 frames without it (occluded, or the segmenter missed it)
        assert trk.update([], frame * FRAME_NS) == []
    back = trk.update([part(square(30, 10 + speed * 7))], 7 * FRAME_NS)[0]
    assert back == seen[0] and set(seen.values()) == {seen[0]}
    assert trk.diagnostics()["tracks_confirmed"] == 1


def test_a_part_missing_longer_than_max_age_gets_a_new_id():
    trk = tracker(track_max_age=3)
    old = trk.update([part(square(30, 30))], 0)[0]
    for frame in range(1, 5):  # 4 misses > track_max_age
        trk.update([], frame * FRAME_NS)
    new = trk.update([part(square(30, 30))], 5 * FRAME_NS)[0]
    assert new > 0 and new != old


def test_a_backwards_stamp_resets_and_ids_start_fresh():
    trk = tracker()
    stamp = 10 * 10**9
    old = [trk.update([part(square(30, 30))], stamp + i * FRAME_NS)[0] for i in range(3)]
    assert trk.resets == 0 and trk.reset_on_last_update is None
    new = trk.update([part(square(30, 30))], stamp)[0]  # a bag loop: the same frame again, earlier stamp
    assert trk.resets == 1 and trk.resets_by_reason[RESET_BACKWARDS] == 1
    assert trk.last_reset.reason == RESET_BACKWARDS == "time jumped backwards"
    assert trk.reset_on_last_update is trk.last_reset and "previous" in trk.last_reset.detail
    assert new > 0 and new not in old
    assert trk.update([part(square(30, 30))], stamp + FRAME_NS)[0] == new  # tracking goes on from there
    assert trk.reset_on_last_update is None and trk.diagnostics()["resets"] == 1


def test_a_gap_longer_than_track_reset_s_resets():
    trk = tracker(track_reset_s=0.5)
    first = trk.update([part(square(30, 30))], 0)[0]
    assert trk.update([part(square(30, 30))], 500_000_000)[0] == first  # exactly track_reset_s: no reset
    later = trk.update([part(square(30, 30))], 1_000_000_001)[0]
    assert trk.resets == 1 and trk.last_reset.reason == RESET_GAP and later != first
    assert "track_reset_s 0.5 s" in trk.last_reset.detail


def test_track_reset_s_zero_never_resets_on_a_gap():
    trk = tracker(track_reset_s=0)
    first = trk.update([part(square(30, 30))], 0)[0]
    assert trk.update([part(square(30, 30))], 3600 * 10**9)[0] == first and trk.resets == 0


def test_an_image_size_change_resets():
    trk = tracker()
    first = trk.update([part(square(30, 30))], 0)[0]
    second = trk.update([part(square(30, 30, shape=(120, 160)))], FRAME_NS)[0]
    assert trk.last_reset.reason == RESET_IMAGE_SIZE and second != first


def test_min_hits_delays_the_id_and_a_tentative_track_that_misses_starts_over():
    trk = PartTracker(TrackerSettings(track_min_hits=3))
    ids = [trk.update([part(square(30, 30 + 2 * i))], i * FRAME_NS)[0] for i in range(5)]
    assert ids[:2] == [0, 0] and ids[2] > 0 and ids[2:] == [ids[2]] * 3
    trk.update([part(square(30, 30)), part(square(60, 100))], 5 * FRAME_NS)  # a new part: 1 hit
    trk.update([part(square(30, 30))], 6 * FRAME_NS)  # ... missed: dropped
    counts = [trk.update([part(square(30, 30)), part(square(60, 100))], (7 + i) * FRAME_NS)[1] for i in range(3)]
    assert counts[:2] == [0, 0] and counts[2] > 0


def test_ids_are_never_reused_and_wrap_within_mono16():
    trk = tracker(track_max_age=1)
    issued = []
    for frame in range(40):  # parts come and go: a new one every 2 frames, each lives 3 frames
        masks = [square(10 + 25 * (k % 3), 5 + 12 * (k % 11)) for k in range(frame // 2 - 1, frame // 2 + 1)]
        ids = trk.update([part(m) for m in masks if m.any()], frame * FRAME_NS)
        issued += [i for i in ids if i not in issued]
        if frame == 20:
            trk.reset()
    assert len(issued) == len(set(issued)) > 20 and 0 not in issued

    trk = tracker()
    trk._next_id = MAX_TRACK_ID - 1  # as after 65533 ids; id 1 is held by a live track
    held = trk.update([part(square(5, 5))], 0)[0]
    assert held == MAX_TRACK_ID - 1
    trk._next_id = 1
    ids = trk.update([part(square(5, 5)), part(square(40, 40)), part(square(40, 100))], FRAME_NS)
    assert ids == [held, 1, 2]
    trk._next_id = MAX_TRACK_ID - 1  # the counter reaches 65534 again, still held: skipped
    ids = trk.update([part(square(5, 5)), part(square(40, 40)), part(square(40, 100)),
                      part(square(70, 5)), part(square(70, 60))], 2 * FRAME_NS)
    assert ids == [held, 1, 2, MAX_TRACK_ID, 3]


def test_empty_masks_get_no_id_and_inputs_are_checked():
    trk = tracker()
    assert trk.update([part(np.zeros(SHAPE, bool)), part(square(5, 5))], 0)[0] == 0
    with pytest.raises(WpsSamError, match="2-D"):
        trk.update([part(np.zeros((1, *SHAPE), bool))], FRAME_NS)
    with pytest.raises(WpsSamError, match="differs"):
        trk.update([part(square(5, 5)), part(np.zeros((10, 10), bool))], FRAME_NS)
    with pytest.raises(WpsSamError, match="stamp_ns must be an integer"):
        trk.update([], 1.5)
    with pytest.raises(WpsSamError, match="dtype float"):
        trk.update([part(square(5, 5).astype(float))], FRAME_NS)


@pytest.mark.parametrize("bad, field", [
    ({"match_iou": 0.0}, "match_iou"), ({"match_iou": 1.5}, "match_iou"), ({"match_iou": "0.3"}, "match_iou"),
    ({"track_max_age": -1}, "track_max_age"), ({"track_max_age": 2.5}, "track_max_age"),
    ({"track_max_age": True}, "track_max_age"), ({"track_min_hits": 0}, "track_min_hits"),
    ({"track_reset_s": -1.0}, "track_reset_s"), ({"track_reset_s": float("inf")}, "track_reset_s"),
    ({"track_reset_s": float("nan")}, "track_reset_s"),
])
def test_settings_refuse_bad_values_in_one_line(bad, field):
    with pytest.raises(WpsSamError, match=field) as err:
        TrackerSettings(**bad)
    assert "\n" not in str(err.value)


def test_settings_are_frozen_and_swappable_at_run_time():
    settings = TrackerSettings(track_min_hits=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.match_iou = 0.9  # type: ignore[misc]
    trk = PartTracker(settings)
    assert trk.update([part(square(30, 30))], 0) == [0]  # tentative (track_min_hits 2)
    trk.settings = dataclasses.replace(settings, match_iou=0.9)
    assert trk.settings.match_iou == 0.9
    assert trk.update([part(square(30, 30))], FRAME_NS) == [1]  # the tentative track survived the swap
    with pytest.raises(WpsSamError, match="TrackerSettings"):
        trk.settings = {"match_iou": 0.5}  # type: ignore[assignment]


def test_part_instances_of_the_segmenter_fit():
    from wps_sam_core.segmenter import PartInstance

    trk = tracker()
    inst = PartInstance(1, 2, "mug_handle", 0.9, (30.0, 30.0, 50.0, 50.0), square(30, 30))
    assert trk.update([inst], 0)[0] == 1


def test_the_tracker_imports_without_torch():
    code = ("import importlib.abc, sys\n"
            "class NoTorch(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'torchvision', 'segment_anything'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            # the package's __init__ loads the torch-based dedup: what is checked is tracking's own imports
            "import types, wps_sam_core\n"
            "pkg = types.ModuleType('wps_sam_core.postprocess')\n"
            "pkg.__path__ = [wps_sam_core.__path__[0] + '/postprocess']\n"
            "sys.modules[pkg.__name__] = pkg\n"
            "import wps_sam_core.postprocess.tracking\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'torch']\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
