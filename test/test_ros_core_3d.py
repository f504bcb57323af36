"""The node core with depth (tiny model): Detection3DArray centres checked against the published instance map on a
plane at 1 m, the point cloud while wanted, and every bad 3D input a counted reason in /diagnostics while the 2D
outputs go on."""
from __future__ import annotations

import time

import numpy as np
import pytest

from wps_sam_ros import topics
from wps_sam_ros.core import PartSegCore, load_segmenter
from wps_sam_ros.parts_3d import depth_options
from wps_sam_ros.messages import OK, WARN, MessageFactory, RosbagsBackend

from conftest import random_image
from rgbd import camera_info, depth_image, expected_centres, intrinsics_for
from test_ros_core import decode, node_params, raw_msg

H, W = 48, 64
K = intrinsics_for(H, W)
FACTORY = MessageFactory(RosbagsBackend())
PLANE = np.ones((H, W), np.float32)  # a wall at 1 m
TWO_D = {"masks", "instance_masks", "instances", "object_masks", "objects"}


@pytest.fixture(scope="module")
def segmenter(tiny_files):
    return load_segmenter(node_params(tiny_files))


def depth_core(segmenter, warnings=None, **params):
    params = {**topics.defaults(), "depth_topic": "/camera/aligned_depth_to_color/image_raw", **params}
    warn = (lambda m: None) if warnings is None else warnings.append
    return PartSegCore(segmenter, FACTORY, lambda k, m: None, warn=warn, overlay_wanted=lambda: False,
                       **depth_options(params))


def frame(seed=0, stamp=(12, 345), metres=PLANE, encoding="16UC1", k=K, info_size=None):
    image = raw_msg(random_image(H, W, seed), stamp)
    depth = depth_image(FACTORY, image.header, metres, encoding)
    info = camera_info(FACTORY, image.header, k, *(info_size or (None, None)))
    return image, depth, info


def diagnostics(core) -> tuple[int, str, dict[str, str]]:
    (status,) = core.diagnostics_message().status
    return status.level, status.message, {kv.key: kv.value for kv in status.values}


def test_parts_on_a_wall_at_one_metre_have_hand_computed_centres(segmenter):
    core = depth_core(segmenter)
    out = core.process(*frame())
    assert TWO_D | {"detections_3d", "points"} <= set(out)
    instance_map = decode(out["instance_masks"])
    expected = expected_centres(instance_map, K)
    dets = out["detections_3d"].detections
    assert len(dets) == len(out["instances"].detections) == len(expected) > 0
    assert [d.id for d in dets] == [d.id for d in out["instances"].detections]  # same ids, same order
    for det in dets:
        p = det.bbox.center.position
        assert (p.x, p.y, p.z) == pytest.approx(expected[int(det.id)], abs=1e-6)
        assert det.results[0].hypothesis.class_id == next(
            d.results[0].hypothesis.class_id for d in out["instances"].detections if d.id == det.id)
    assert out["detections_3d"].header.frame_id == "cam" and out["points"].header.stamp.sec == 12
    assert out["points"].width == np.count_nonzero(decode(out["masks"]))  # every part pixel has depth
    level, _, values = diagnostics(core)
    assert values["frames_3d"] == "1" and values["frames_3d_rejected"] == "0" and values["camera_info"] == "received"
    assert values["depth_topic"] == "/camera/aligned_depth_to_color/image_raw"
    assert values["camera_info_topic"] == "/camera/aligned_depth_to_color/camera_info"


def test_16uc1_and_32fc1_give_the_same_positions(segmenter):
    a = depth_core(segmenter).process(*frame(metres=PLANE * 1.25))["detections_3d"]
    b = depth_core(segmenter).process(*frame(metres=PLANE * 1.25, encoding="32FC1"))["detections_3d"]
    assert [(d.id, d.bbox.center.position.z) for d in a.detections] == [
        (d.id, d.bbox.center.position.z) for d in b.detections]
    assert all(d.bbox.center.position.z == pytest.approx(1.25) for d in a.detections)


def test_a_part_without_depth_gets_no_3d_detection_and_is_counted(segmenter):
    core = depth_core(segmenter)
    instance_map = decode(core.process(*frame())["instance_masks"])
    hole = instance_map == instance_map.max()  # the last part: no depth on any of its pixels
    out = core.process(*frame(metres=np.where(hole, 0.0, PLANE).astype(np.float32)))
    ids_3d = {int(d.id) for d in out["detections_3d"].detections}
    assert int(instance_map.max()) not in ids_3d and len(out["instances"].detections) == len(ids_3d) + 1
    assert diagnostics(core)[2]["parts_without_depth"] == "1"


@pytest.mark.parametrize("case, reason", [
    ("no_camera_info", "no CameraInfo received yet on /camera/aligned_depth_to_color/camera_info"),
    ("depth_size", "depth image is 32x24 but the colour image is 64x48; use the depth aligned"),
    ("encoding", "unsupported depth encoding 'mono16'"),
    ("zero_focal", "CameraInfo unusable: focal length fx must be a finite number > 0, got 0.0"),
    ("info_size", "CameraInfo is for 640x480 but the depth image is 64x48"),
])
def test_bad_3d_input_is_a_counted_reason_and_2d_goes_on(segmenter, case, reason):
    warnings = []
    core = depth_core(segmenter, warnings)
    image, depth, info = frame(info_size=(640, 480) if case == "info_size" else None)
    if case == "no_camera_info":
        info = None
    elif case == "depth_size":
        depth = depth_image(FACTORY, image.header, PLANE[::2, ::2])
        info = camera_info(FACTORY, image.header, intrinsics_for(H // 2, W // 2))
    elif case == "encoding":
        depth.encoding = "mono16"
    elif case == "zero_focal":
        info.k[0] = 0.0
    out = core.process(image, depth, info)
    assert set(out) == TWO_D  # 2D outputs as without depth; nothing 3D
    assert len(warnings) == 1 and warnings[0].startswith("no 3D for frame: ") and reason in warnings[0]
    assert "\n" not in warnings[0]
    level, message, values = diagnostics(core)
    assert level == WARN and reason in message and values["frames_3d_rejected"] == "1"
    assert values["frames_rejected"] == "0" and values["frames_processed"] == "1"  # the frame itself was fine
    waiting = case == "no_camera_info"
    assert ("3D waiting for CameraInfo" in message) == waiting and values["camera_info"] == (
        "waiting" if waiting else "received")
    # the next good frame clears the warning
    assert "detections_3d" in core.process(*frame())
    assert diagnostics(core)[0] == OK or "caveat" in diagnostics(core)[1]


def test_depth_scale_to_image_lifts_a_half_size_depth(segmenter):
    image, _, _ = frame()
    depth = depth_image(FACTORY, image.header, PLANE[::2, ::2])
    info = camera_info(FACTORY, image.header, intrinsics_for(H // 2, W // 2, focal=25.0))
    out = depth_core(segmenter, depth_scale_to_image=True).process(image, depth, info)
    scaled = intrinsics_for(H // 2, W // 2, focal=25.0).scaled(W, H)
    expected = expected_centres(decode(out["instance_masks"]), scaled)
    assert expected and {int(d.id): pytest.approx(tuple(vars(d.bbox.center.position)[a] for a in "xyz"), abs=1e-6)
                         for d in out["detections_3d"].detections} == expected


def test_points_only_while_wanted_and_published(segmenter):
    wanted = [False]
    core = depth_core(segmenter)
    core.lifter.points_wanted = lambda: wanted[0]
    assert "points" not in core.process(*frame()) and "detections_3d" in core.process(*frame())
    wanted[0] = True
    assert "points" in core.process(*frame())
    assert core.set_parameters({"publish_points": False}) == (True, "")
    assert "points" not in core.process(*frame())


def test_without_depth_topic_the_core_stays_2d(segmenter):
    core = PartSegCore(segmenter, FACTORY, lambda k, m: None, overlay_wanted=lambda: False)
    assert depth_options(topics.defaults()) == {}
    assert set(core.process(*frame())) == TWO_D
    assert "frames_3d" not in diagnostics(core)[2]


def test_live_pairs_replace_unprocessed_ones(segmenter):
    published = []
    params = {**topics.defaults(), "depth_topic": "depth/image"}
    core = PartSegCore(segmenter, FACTORY, lambda k, m: published.append((k, m)), **depth_options(params))
    for i in range(3):  # nobody takes them: each pair replaces the previous one
        core.submit(*frame(seed=i, stamp=(20 + i, 0)))
    assert core.stats.received == 3 and core.stats.dropped == 2
    core.start()  # the worker: a pair submitted now comes out in 2D and 3D with its header
    try:
        core.submit(*frame(seed=3, stamp=(30, 0)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(k == "detections_3d" for k, _ in published):
            time.sleep(0.02)
    finally:
        core.stop()
    assert core.stats.rejected == 0, core.stats.last_problem
    assert {(k, m.header.stamp.sec) for k, m in published} >= {("masks", 30), ("detections_3d", 30), ("points", 30)}
