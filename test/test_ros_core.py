"""The middleware-free node core on the tiny model: outputs, header copy, bad frames, parameters, the slot."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from wps_sam_core.embedded import DEMO_MODEL_CAVEAT, embedded_available
from wps_sam_core.errors import WpsSamError
from wps_sam_core.segmenter import SegmenterSettings
from wps_sam_ros import topics
from wps_sam_ros.conversions import encode_compressed
from wps_sam_ros.core import (
    LatestFrameSlot, PartSegCore, ThrottledWarning, frame_latency_ms, load_segmenter, settings_from_parameters,
)
from wps_sam_ros.messages import OK, WARN, MessageFactory, RosbagsBackend

from conftest import TEST_CLASSES, random_image


def node_params(tiny_files, **overrides):
    sam_path, prompter_path = tiny_files
    params = topics.defaults()
    params.update(prompter_checkpoint=str(prompter_path), sam_checkpoint=str(sam_path), device="cpu",
                  score_threshold=0.0)
    params.update(overrides)
    return params


@pytest.fixture(scope="module")
def segmenter(tiny_files):
    return load_segmenter(node_params(tiny_files))


def make_core(segmenter, published=None, warnings=None, **kwargs):
    factory = MessageFactory(RosbagsBackend())
    publish = (lambda k, m: published.append((k, m))) if published is not None else (lambda k, m: None)
    warn = warnings.append if warnings is not None else (lambda m: None)
    return PartSegCore(segmenter, factory, publish, warn=warn, **kwargs)


def raw_msg(rgb: np.ndarray, stamp=(12, 345), frame_id="cam", encoding="rgb8"):
    factory = MessageFactory(RosbagsBackend())
    header = factory.header(stamp[0] * 10**9 + stamp[1], frame_id)
    pixels = rgb if encoding == "rgb8" else np.ascontiguousarray(rgb[:, :, ::-1])
    return factory.image(header, pixels, encoding)


def decode(image_msg) -> np.ndarray:
    dtype = "<u2" if image_msg.encoding == "mono16" else np.uint8
    return np.frombuffer(bytes(image_msg.data), dtype).reshape(image_msg.height, image_msg.width)


def test_outputs_are_consistent_and_carry_the_header(segmenter):
    core = make_core(segmenter)
    out = core.process(raw_msg(random_image(48, 64, 3), stamp=(1700000000, 999), frame_id="cam_optical"))
    assert set(out) == {"masks", "instance_masks", "instances", "object_masks", "objects", "overlay"}
    for msg in [*out.values(), *out["instances"].detections]:
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1700000000, 999, "cam_optical")
    labels, instances = decode(out["masks"]), decode(out["instance_masks"])
    assert labels.shape == instances.shape == (48, 64)
    dets = out["instances"].detections
    assert len(dets) > 0  # the forced-part tiny model always finds parts
    assert {int(d.id) for d in dets} == set(np.unique(instances)) - {0}
    for det in dets:  # the label map agrees with each instance's class
        class_id = TEST_CLASSES.index(det.results[0].hypothesis.class_id) + 1
        assert set(np.unique(labels[instances == int(det.id)])) == {class_id}
    assert np.array_equal(labels > 0, instances > 0)
    assert out["overlay"].encoding == "rgb8" and out["overlay"].height == 48


def test_bgr_and_compressed_inputs_give_the_same_parts(segmenter):
    core = make_core(segmenter)
    rgb = random_image(40, 56, 5)
    ref = decode(core.process(raw_msg(rgb))["masks"])
    assert np.array_equal(decode(core.process(raw_msg(rgb, encoding="bgr8"))["masks"]), ref)
    factory = MessageFactory(RosbagsBackend())
    fmt, data = encode_compressed(rgb, "png")
    compressed = factory.compressed_image(factory.header(5), fmt, data)
    assert np.array_equal(decode(core.process(compressed)["masks"]), ref)


def test_malformed_message_is_reported_and_the_next_good_one_processed(segmenter):
    warnings: list[str] = []
    published: list = []
    core = make_core(segmenter, published, warnings)
    bad = raw_msg(random_image(24, 32))
    bad.step = 10  # < width x 3
    good = raw_msg(random_image(24, 32, 1), stamp=(7, 7))
    core.start()
    try:
        core.submit(bad)
        deadline = time.monotonic() + 30
        while core.stats.rejected == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        core.submit(good)
        while not published and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        core.stop()
    assert core.stats.rejected == 1 and core.stats.processed == 1
    assert len(warnings) == 1 and "step 10" in warnings[0] and "rejected frame" in warnings[0]
    assert {key for key, _ in published} >= {"masks", "instances"}
    assert all(msg.header.stamp.sec == 7 for _, msg in published)
    diag = core.diagnostics_message().status[0]
    values = {kv.key: kv.value for kv in diag.values}
    assert values["frames_rejected"] == "1" and values["frames_processed"] == "1" and values["device"] == "cpu"


def test_unknown_encoding_is_rejected_without_output(segmenter):
    warnings: list[str] = []
    core = make_core(segmenter, warnings=warnings)
    msg = raw_msg(random_image(8, 8))
    msg.encoding = "bayer_rggb8"
    assert core.process(msg) is None
    assert "bayer_rggb8" in warnings[0]
    diag = core.diagnostics_message().status[0]
    assert diag.level == 1 and "bayer_rggb8" in diag.message  # WARN while the last frame was bad


def test_overlay_only_when_wanted(segmenter):
    wanted = {"value": False}
    core = make_core(segmenter, overlay_wanted=lambda: wanted["value"])
    assert "overlay" not in core.process(raw_msg(random_image(16, 16)))
    wanted["value"] = True
    assert "overlay" in core.process(raw_msg(random_image(16, 16)))
    assert core.set_parameters({"publish_overlay": False}) == (True, "")
    assert "overlay" not in core.process(raw_msg(random_image(16, 16)))


def test_runtime_parameters(segmenter):
    published: list = []
    core = make_core(segmenter, published)
    try:
        ok, reason = core.set_parameters({"score_threshold": 1.5})
        assert not ok and "score_threshold" in reason
        ok, reason = core.set_parameters({"class_filter": "mug_body, wheel"})
        assert not ok and "wheel" in reason
        ok, reason = core.set_parameters({"device": "cuda"})
        assert not ok and "device" in reason and "restart" in reason
        assert segmenter.settings.score_threshold == 0.0  # nothing applied by the rejected calls
        assert core.set_parameters({"class_filter": "mug_handle", "max_instances": 2}) == (True, "")
        dets = core.process(raw_msg(random_image(48, 64, 2)))["instances"].detections
        assert len(dets) <= 2 and {d.results[0].hypothesis.class_id for d in dets} <= {"mug_handle"}
        assert core.set_parameters({"score_threshold": 0.25}) == (True, "")
        (key, info), = published  # LabelInfo re-sent: it carries the threshold
        assert key == "label_info" and info.threshold == pytest.approx(0.25)
        # duplicate suppression: run-time, [0, 1], refused whole (nothing of the call applied) out of range
        default = segmenter.settings.dedup_iou
        for bad in (1.5, -0.1):
            ok, reason = core.set_parameters({"dedup_iou": bad, "max_instances": 3})
            assert not ok and reason == f"dedup_iou must be in [0, 1] (0 = off), got {bad}"
        assert segmenter.settings.dedup_iou == default and segmenter.settings.max_instances == 2
        assert core.set_parameters({"dedup_iou": 0.0}) == (True, "") and segmenter.settings.dedup_iou == 0.0
        assert core.set_parameters({"dedup_iou": 0.8}) == (True, "") and segmenter.settings.dedup_iou == 0.8
        assert settings_from_parameters(topics.defaults()).dedup_iou == default  # the node starts with the default
    finally:
        segmenter.update_settings(score_threshold=0.0, class_filter=(), max_instances=25,
                                  dedup_iou=SegmenterSettings().dedup_iou)


def test_latest_frame_slot_replaces_and_counts():
    slot = LatestFrameSlot()
    assert slot.put(1) is False and slot.put(2) is True and slot.put(3) is True
    assert slot.take(0.01) == 3 and slot.take(0.01) is None
    got = []
    consumer = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    consumer.start()
    slot.put("x")
    consumer.join(5)
    assert got == ["x"]


def test_throttled_warning():
    said: list[str] = []
    warn = ThrottledWarning(said.append, period_s=60)
    assert warn("a") and not warn("b") and not warn("c")
    warn._last -= 61
    assert warn("d") and said == ["a", "d (2 similar warnings suppressed)"]


def test_load_segmenter_errors_name_the_parameter(tiny_files):
    with pytest.raises(WpsSamError, match="device"):
        load_segmenter(node_params(tiny_files, device="tpu"))
    with pytest.raises(WpsSamError, match="prompter_checkpoint"):
        load_segmenter({**node_params(tiny_files), "prompter_checkpoint": ""})
    with pytest.raises(WpsSamError, match="class_filter"):
        load_segmenter(node_params(tiny_files, class_filter="nope"))


@pytest.mark.skipif(not embedded_available(), reason="embedded default model not built yet (wps_sam_core/assets)")
def test_embedded_default_model_when_no_checkpoint_is_given():
    params = {**topics.defaults(), "device": "cpu"}
    seg = load_segmenter(params)
    core = make_core(seg)
    out = core.process(raw_msg(random_image(64, 80)))
    assert decode(out["masks"]).shape == (64, 80)
    assert "embedded" in seg.description
    # a first-run user must learn that the demo model does not know real objects: WARN in /diagnostics
    status = core.diagnostics_message().status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == WARN and "demo model" in status.message
    assert values["model_caveat"] == DEMO_MODEL_CAVEAT and "prompter_checkpoint" in DEMO_MODEL_CAVEAT


def test_no_caveat_for_a_user_model(segmenter):
    status = make_core(segmenter).diagnostics_message().status[0]
    assert status.level == OK and "model_caveat" not in {kv.key for kv in status.values}


def test_latency_is_unknown_without_a_clock_or_a_stamp(segmenter):
    """use_sim_time before /clock: the node's clock reads 0; latency must be n/a, not -898091736765 ms."""
    stamp_ns = 1_700_000_000 * 10**9
    sim_clock_not_started = make_core(segmenter, now_ns=lambda: 0)
    sim_clock_not_started.process(raw_msg(random_image(48, 64), stamp=(1_700_000_000, 0)))
    values = {kv.key: kv.value for kv in sim_clock_not_started.diagnostics_message().status[0].values}
    assert values["frames_processed"] == "1" and values["latency_ms_mean"] == "n/a"
    unstamped = make_core(segmenter, now_ns=lambda: stamp_ns)
    unstamped.process(raw_msg(random_image(48, 64), stamp=(0, 0)))
    assert unstamped.stats.values()["latency_ms_last"] == "n/a"
    running = make_core(segmenter, now_ns=lambda: stamp_ns + 40_000_000)
    running.process(raw_msg(random_image(48, 64), stamp=(1_700_000_000, 0)))
    assert running.stats.values()["latency_ms_last"] == "40.0"
    assert frame_latency_ms(0, raw_msg(random_image(4, 4)).header) is None

