"""Property tests (hypothesis, bounded): image-message conversion and the label/instance map invariants.

Conversion: any sensor_msgs/Image (encoding, size, step, data length, byte order, data container) is
either the exact image a per-pixel reference decoder gives, or a one-line WpsSamError; the node core's
frame callback never raises, and counts a rejection exactly when the conversion rejects.
assemble(): every instance id in the map has exactly one instance and its pixels, ids are 1..n by
descending score, the label map is the instances' classes, and the highest score covering a pixel owns it.
Duplicate suppression in the segmenter: label and instance maps are painted from the same kept masks, no
two kept masks of a class overlap past dedup_iou (NMS), and merging loses no pixel.
"""
from __future__ import annotations

import array
from types import SimpleNamespace
from unittest import mock

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torch

from wps_sam_core.errors import WpsSamError
from wps_sam_core.postprocess.dedup import DEDUP_METHODS, deduplicate
from wps_sam_core.preprocess import ImageGeometry
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings, assemble
from wps_sam_ros.conversions import ENCODINGS, message_to_rgb
from wps_sam_ros.core import PartSegCore
from wps_sam_ros.messages import MessageFactory, RosbagsBackend

from conftest import TEST_CLASSES, make_tiny_model

BOUNDED = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
ENCODING_NAMES = sorted(ENCODINGS) + ["32FC1", "16UC1", "yuv422", "", "RGB8"]
CONTAINERS = [bytes, bytearray, lambda b: np.frombuffer(b, np.uint8), lambda b: array.array("B", b), list]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- image messages ----------------------------------------------------------------------------------------
@st.composite
def image_messages(draw, max_side: int = 6):
    well_formed = draw(st.booleans())  # half the examples well formed, so both outcomes are exercised
    encoding = draw(st.sampled_from(sorted(ENCODINGS) if well_formed else ENCODING_NAMES))
    spec = ENCODINGS.get(encoding)
    channels, depth = (spec.channels, spec.bytes_per_channel) if spec else (draw(st.integers(1, 4)), 1)
    height, width = draw(st.integers(int(well_formed), max_side)), draw(st.integers(int(well_formed), max_side))
    row = width * channels * depth
    if well_formed:  # row padding allowed, as drivers do
        step = row + depth * draw(st.integers(0, 3))
        length = step * height
    else:
        step = draw(st.one_of(st.just(row), st.integers(row, row + 5), st.integers(0, row + 8)))
        length = draw(st.one_of(st.just(step * height), st.integers(0, step * height + 10)))
    data = draw(st.binary(min_size=length, max_size=length))
    container = draw(st.sampled_from(CONTAINERS))
    header = SimpleNamespace(stamp=SimpleNamespace(sec=3, nanosec=4), frame_id="cam")
    return SimpleNamespace(header=header, encoding=encoding, height=height, width=width, step=step,
                           is_bigendian=draw(st.sampled_from([0, 1])), data=container(data))


def reference_rgb(msg) -> np.ndarray | None:
    """Per-pixel decoding straight from the ROS definitions; None where the message is malformed."""
    spec = ENCODINGS.get(msg.encoding)
    raw = bytes(msg.data)
    if spec is None or msg.height < 1 or msg.width < 1:
        return None
    ch, depth = spec.channels, spec.bytes_per_channel
    if msg.step < msg.width * ch * depth or msg.step % depth or len(raw) != msg.step * msg.height:
        return None
    out = np.zeros((msg.height, msg.width, 3), np.uint8)
    for y in range(msg.height):
        for x in range(msg.width):
            at = y * msg.step + x * ch * depth
            values = [int.from_bytes(raw[at + c * depth: at + (c + 1) * depth], "big" if msg.is_bigendian else "little")
                      for c in range(ch)]
            if depth == 2:
                values = [v >> 8 for v in values]  # the documented mono16 rule: keep the high byte
            if ch == 1:
                values = values * 3
            elif msg.encoding in ("bgr8", "bgra8", "8UC3"):
                values = values[2::-1]
            out[y, x] = values[:3]
    return out


@settings(BOUNDED, max_examples=300)
@given(image_messages())
def test_image_conversion_is_exact_or_a_named_rejection(msg):
    expected = reference_rgb(msg)
    if expected is None:
        with pytest.raises(WpsSamError) as err:
            message_to_rgb(msg)
        assert str(err.value) and "\n" not in str(err.value)
    else:
        got = message_to_rgb(msg)
        assert got.dtype == np.uint8 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def png_of(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


@st.composite
def compressed_messages(draw):
    fmt = draw(st.sampled_from(["png", "jpeg", "rgb8; png compressed bgr8", "tiff", "", "bmp"]))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    pixels = np.frombuffer(draw(st.binary(min_size=h * w * 3, max_size=h * w * 3)), np.uint8).reshape(h, w, 3)
    valid = png_of(pixels)
    data = draw(st.one_of(st.just(valid), st.binary(max_size=64), st.integers(0, len(valid) - 1).map(lambda n: valid[:n])))
    return SimpleNamespace(format=fmt, data=draw(st.sampled_from(CONTAINERS))(data)), pixels, data == valid


@settings(BOUNDED, max_examples=150)
@given(compressed_messages())
def test_compressed_conversion_is_exact_or_a_named_rejection(case):
    msg, pixels, intact = case
    try:
        got = message_to_rgb(msg)
    except WpsSamError as exc:
        assert "\n" not in str(exc)
        assert not (intact and "png" in msg.format)  # an intact PNG in a PNG-named message must decode
        return
    assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3
    if intact:
        np.testing.assert_array_equal(got, pixels[:, :, ::-1])  # PNG holds BGR (OpenCV order); we give RGB


@pytest.fixture(scope="module")
def core_and_warnings():
    segmenter = PartSegmenter(make_tiny_model(), TEST_CLASSES, "cpu", settings=SegmenterSettings(score_threshold=0.0))
    warnings: list[str] = []
    core = PartSegCore(segmenter, MessageFactory(RosbagsBackend()), lambda k, m: None, warn=warnings.append,
                       publish_overlay=False)
    return core, warnings


@settings(BOUNDED, max_examples=40)
@given(image_messages(max_side=5))
def test_node_callback_never_raises(core_and_warnings, msg):
    core, warnings = core_and_warnings
    rejected, processed = core.stats.rejected, core.stats.processed
    out = core.process(msg)  # any exception here fails the test
    if reference_rgb(msg) is None:
        assert out is None and core.stats.rejected == rejected + 1 and core.stats.processed == processed
        assert core.stats.last_was_rejected and core.stats.last_problem and "\n" not in core.stats.last_problem
        assert warnings and warnings[0].startswith("rejected frame: ")  # the first one is said; later ones throttled
    else:
        assert core.stats.processed == processed + 1 and core.stats.rejected == rejected
        assert (out["masks"].height, out["masks"].width) == (msg.height, msg.width)
        assert out["masks"].header.stamp.nanosec == 4


# ---- assemble(): label / instance map invariants -----------------------------------------------------------
@st.composite
def mask_sets(draw):
    k, h, w = draw(st.integers(0, 6)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    bits = draw(st.binary(min_size=k * h * w, max_size=k * h * w))
    masks = (np.frombuffer(bits, np.uint8) % 3 == 0).reshape(k, h, w)  # ~1/3 of the pixels, many overlaps
    scores = np.array(draw(st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.5, 0.7, 0.9, 1.0]), min_size=k, max_size=k)))
    classes = np.array(draw(st.lists(st.integers(1, len(TEST_CLASSES)), min_size=k, max_size=k)), dtype=int)
    return masks, classes, scores.astype(np.float64)


@settings(BOUNDED, max_examples=300)
@given(mask_sets(), st.sampled_from(["smaller_on_top", "score"]))
def test_assemble_invariants(case, overlap):
    masks, classes, scores = case
    result = assemble(masks, classes, scores, np.zeros(len(scores)), TEST_CLASSES, overlap)
    labels, ids, instances = result.labels, result.instance_ids, result.instances
    assert labels.dtype == np.uint8 and ids.dtype == np.uint16 and labels.shape == ids.shape == masks.shape[1:]
    assert [inst.instance_id for inst in instances] == list(range(1, len(instances) + 1))  # contiguous
    assert set(np.unique(ids)) - {0} == {inst.instance_id for inst in instances}  # each id: exactly one instance
    assert [inst.score for inst in instances] == sorted((inst.score for inst in instances), reverse=True)
    for inst in instances:
        visible = ids == inst.instance_id
        assert inst.mask.any() and np.array_equal(inst.mask, visible)
        assert np.all(labels[visible] == inst.class_id) and inst.class_name == TEST_CLASSES[inst.class_id - 1]
        ys, xs = np.nonzero(visible)
        assert inst.box_xyxy == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    covered = masks.any(axis=0) if len(masks) else np.zeros(labels.shape, bool)
    assert np.array_equal(ids > 0, covered) and np.array_equal(labels > 0, covered)
    by_id = {inst.instance_id: inst for inst in instances}
    areas = masks.reshape(len(masks), labels.size).sum(1)
    for y, x in zip(*np.nonzero(covered)):
        here = masks[:, y, x]
        owner = by_id[int(ids[y, x])]
        if overlap == "score":  # the highest score covering a pixel owns it
            assert owner.score == scores[here].max()
        else:  # the smallest mask covering it does; among equally small ones the highest score
            smallest = areas[here].min()
            assert owner.score == scores[here & (areas == smallest)].max()


# ---- duplicate suppression inside the segmenter ------------------------------------------------------------
@pytest.fixture(scope="module")
def dedup_segmenter():
    return PartSegmenter(make_tiny_model(), TEST_CLASSES, "cpu", settings=SegmenterSettings(score_threshold=0.0))


@settings(BOUNDED, max_examples=120)
@given(mask_sets(), st.sampled_from(DEDUP_METHODS), st.sampled_from([0.2, 1 / 3, 0.5, 0.8]),
       st.sampled_from(["smaller_on_top", "score"]))
def test_dedup_keeps_label_and_instance_maps_consistent(dedup_segmenter, case, method, dedup_iou, overlap):
    low_res, classes, scores = case  # K x h x w masks as the decoder's low-res logits
    k, h, w = low_res.shape
    logits = torch.from_numpy(np.where(low_res, 8.0, -8.0)).float()[:, None]
    seg = dedup_segmenter
    args = (torch.zeros(1, 1, 1, 1), [ImageGeometry((2 * h, 2 * w), (256, 256))], torch.zeros(k, dtype=torch.long),
            torch.zeros(k, 2, 8), torch.from_numpy(classes), torch.from_numpy(scores))
    decode = lambda emb, idx, tok: (logits.clone(), torch.full((k,), 0.5))  # noqa: E731
    with mock.patch.object(seg.model, "decode", decode), mock.patch.object(seg, "dedup_method", method):
        off = seg.decode_instances(*args, settings=SegmenterSettings(dedup_iou=0.0, overlap=overlap))[0]
        kept = seg.decode_instances(*args, settings=SegmenterSettings(dedup_iou=dedup_iou, overlap=overlap))[0]
        result = seg.decode_prompts(*args, settings=SegmenterSettings(dedup_iou=dedup_iou, overlap=overlap))[0]
    assert len(off.masks) == k and len(kept.masks) <= k
    # the published maps are the kept masks painted: one kept set for the label map and the instance map
    painted = kept.assemble(TEST_CLASSES, overlap)
    assert np.array_equal(result.labels, painted.labels) and np.array_equal(result.instance_ids, painted.instance_ids)
    covered = kept.masks.any(0) if len(kept.masks) else np.zeros((2 * h, 2 * w), bool)
    assert np.array_equal(result.labels > 0, covered) and np.array_equal(result.instance_ids > 0, covered)
    for inst in result.instances:
        assert np.all(result.labels[inst.mask] == inst.class_id)
        assert any(c == inst.class_id and s == inst.score and m[inst.mask].all()
                   for m, c, s in zip(kept.masks, kept.class_ids, kept.scores))
    # the kept set is postprocess.dedup's, and each class present stays present
    expected = deduplicate(logits[:, 0], torch.from_numpy(classes), torch.from_numpy(scores), dedup_iou, method).numpy()
    assert kept.class_ids.tolist() == classes[expected].tolist() and kept.scores.tolist() == scores[expected].tolist()
    assert set(kept.class_ids.tolist()) == set(off.class_ids.tolist())
    if method != "merge":  # suppression drops masks and leaves the kept ones as they were
        assert np.array_equal(kept.masks, off.masks[expected])
    else:  # a dropped mask joins its group's union: no pixel is lost, and a kept mask only grows
        assert np.all(covered[off.masks.any(0)]) if k else True
        assert np.all(kept.masks[off.masks[expected]]) if k else True
