"""Run-time parameter updates while frames are processed: every result comes from ONE settings snapshot.

The same image is segmented over and over while another thread keeps switching between settings sets
that give visibly different results (max_instances, mask threshold, class filter) and throws in invalid
updates. Every result must equal, bit for bit, the result of one of the sets computed beforehand; a
result mixing two sets (e.g. one set's filter with the other's max_instances) matches none.
"""
from __future__ import annotations

import threading
import time

import pytest

from wps_sam_core.errors import WpsSamError
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings
from wps_sam_ros.core import PartSegCore
from wps_sam_ros.messages import MessageFactory, RosbagsBackend

from conftest import TEST_CLASSES, make_tiny_model, random_image

FACTORY = MessageFactory(RosbagsBackend())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene():
    """A segmenter, an image with >= 3 parts, and three settings sets that give distinct results.

    Any mix of two sets' fields (one's max_instances with another's mask threshold, ...) gives a result
    equal to none of the three.
    """
    # dedup off: the random model's overlapping queries would merge into one part, and the sets need several
    seg = PartSegmenter(make_tiny_model(), TEST_CLASSES, "cpu", settings=SegmenterSettings(score_threshold=0.0,
                                                                                          dedup_iou=0.0))
    for seed in range(8):
        image = random_image(40, 48, seed)
        parts = seg.segment(image).instances
        if len(parts) >= 3:
            break
    assert len(parts) >= 3, "no test image shows three parts"
    sets = {
        "top_one": dict(class_filter=(), max_instances=1, mask_threshold=0.0),
        "eight_tight": dict(class_filter=(), max_instances=8, mask_threshold=2.0),
        "filtered_loose": dict(class_filter=(parts[0].class_name,), max_instances=3, mask_threshold=-2.0),
    }
    return seg, image, sets


def signature(result) -> tuple:
    return (result.labels.tobytes(), result.instance_ids.tobytes(),
            tuple((i.instance_id, i.class_name, round(i.score, 6)) for i in result.instances))


def hammer(apply, sets: dict, stop: threading.Event, errors: list) -> int:
    """Switch between the sets as fast as possible, with invalid updates in between; returns the switch count."""
    names, n = list(sets), 0
    while not stop.is_set():
        try:
            apply(sets[names[n % len(names)]])
            if n % 5 == 0:
                with pytest.raises(WpsSamError):  # refused whole: must never half-apply
                    apply({**sets[names[(n + 1) % len(names)]], "score_threshold": 2.0})
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)
            return n
        n += 1
        time.sleep(0.0005)
    return n


def test_segmenter_results_match_one_settings_snapshot(scene):
    seg, image, sets = scene
    expected = {}
    for name, values in sets.items():
        seg.update_settings(**values)
        expected[signature(seg.segment(image))] = name
    assert len(expected) == len(sets)  # the sets are distinguishable by their results

    stop, errors = threading.Event(), []
    switches = []
    thread = threading.Thread(target=lambda: switches.append(hammer(lambda v: seg.update_settings(**v), sets,
                                                                    stop, errors)))
    thread.start()
    seen = []
    try:
        for _ in range(30):
            seen.append(expected.get(signature(seg.segment(image)), "MIXED"))
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    assert "MIXED" not in seen, seen
    assert len(set(seen)) >= 2 and switches[0] > 30  # the settings really changed under the frames


def test_concurrent_writers_leave_a_whole_settings_set(scene):
    seg, _, sets = scene
    stop, errors, bad = threading.Event(), [], []
    whole = [SegmenterSettings(score_threshold=seg.settings.score_threshold, dedup_iou=seg.settings.dedup_iou, **v)
             for v in sets.values()]
    writers = [threading.Thread(target=hammer, args=(lambda v: seg.update_settings(**v), dict(order), stop, errors))
               for order in (list(sets.items()), list(sets.items())[::-1])]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 1.0
    reads = 0
    while time.monotonic() < deadline:
        current = seg.settings
        if current not in whole:
            bad.append(current)
        reads += 1
    stop.set()
    for w in writers:
        w.join(10)
    assert not errors and not bad and reads > 100


def test_node_set_parameters_while_the_worker_runs(scene):
    seg, image, sets = scene
    params = {name: {**v, "class_filter": ",".join(v["class_filter"])} for name, v in sets.items()}
    published: list = []
    lock = threading.Lock()

    def publish(key, msg):
        with lock:
            published.append((key, msg))

    reference = PartSegCore(seg, FACTORY, lambda k, m: None, publish_overlay=False)
    expected = {}
    for name, values in params.items():
        assert reference.set_parameters(values) == (True, "")
        out = reference.process(FACTORY.image(FACTORY.header(1), image, "rgb8"))
        expected[(bytes(out["masks"].data), tuple(d.results[0].hypothesis.class_id for d in out["instances"].detections))] = name
    assert len(expected) == len(sets)
    core = PartSegCore(seg, FACTORY, publish, warn=lambda m: None, publish_overlay=False)

    def apply(values):
        ok, reason = core.set_parameters({**values, "publish_overlay": bool(time.monotonic_ns() % 2)})
        if not ok:
            raise WpsSamError(reason)
        core.diagnostics_message()  # read the stats under the same churn

    stop, errors = threading.Event(), []
    thread = threading.Thread(target=hammer, args=(apply, params, stop, errors))
    core.start()
    thread.start()
    try:
        for i in range(60):
            core.submit(FACTORY.image(FACTORY.header(10_000 + i), image, "rgb8"))
            time.sleep(0.03)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            s = core.stats
            if s.processed + s.dropped + s.rejected == s.received:
                break
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
        core.stop()
    assert not errors, errors
    frames: dict[int, dict] = {}
    for key, msg in published:
        frames.setdefault(msg.header.stamp.nanosec, {})[key] = msg
    seen = []
    for stamp, msgs in frames.items():
        assert {"masks", "instances"} <= set(msgs), stamp
        names = tuple(d.results[0].hypothesis.class_id for d in msgs["instances"].detections)
        seen.append(expected.get((bytes(msgs["masks"].data), names), "MIXED"))
    s = core.stats
    assert "MIXED" not in seen and len(set(seen)) >= 2, seen
    assert s.rejected == 0 and s.received == 60 and s.processed == len(frames) == s.received - s.dropped
