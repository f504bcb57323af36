"""`wps-sam bag --depth-topic` on a rosbag2 with colour, aligned depth (a wall at 1 m) and CameraInfo, written here
with rosbags as a RealSense records them: images paired with depth as the node pairs them, parts/detections_3d
at the image's bag time with centres checked against the written instance map; bad flags are one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags (pip) not installed")

from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402

from wps_sam_core.cli import main as wps_sam  # noqa: E402
from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.messages import MessageFactory, RosbagsBackend, ros2_typestore  # noqa: E402

from conftest import random_image  # noqa: E402
from rgbd import camera_info, depth_image, expected_centres, intrinsics_for  # noqa: E402
from test_ros_bag import model_args, read_bag  # noqa: E402

H, W, FRAMES = 40, 56, 4
K = intrinsics_for(H, W)
CAMERA = "/camera/camera"
COLOUR, DEPTH, INFO = (f"{CAMERA}/color/image_raw", f"{CAMERA}/aligned_depth_to_color/image_raw",
                       f"{CAMERA}/aligned_depth_to_color/camera_info")
START = 1_700_000_000_000_000_000


def write_rgbd_bag(path: Path, depth_offset_ns: int = 3_000_000, period_ns: int = 33_000_000) -> list[int]:
    """FRAMES colour images every `period_ns`; depth stamped `depth_offset_ns` later (and recorded before its colour
    image every other frame), its CameraInfo just before it. Returns the colour images' bag times."""
    store = ros2_typestore()
    factory = MessageFactory(RosbagsBackend(store))
    bag_times = []
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in (
            (COLOUR, topics.RAW_IMAGE_TYPE), (DEPTH, topics.RAW_IMAGE_TYPE), (INFO, topics.CAMERA_INFO_TYPE))}
        for i in range(FRAMES):
            stamp = START + i * period_ns
            image = factory.image(factory.header(stamp, "camera_color_optical_frame"), random_image(H, W, i), "rgb8")
            depth_header = factory.header(stamp + depth_offset_ns, "camera_color_optical_frame")
            depth = depth_image(factory, depth_header, np.ones((H, W), np.float32))
            info = camera_info(factory, depth_header, K)
            image_time = stamp + (2_000_000 if i % 2 else 0)
            for topic, msg, t in ((COLOUR, image, image_time), (DEPTH, depth, stamp + 1_000_000),
                                  (INFO, info, stamp + 999_999)):
                writer.write(conns[topic], t, store.serialize_cdr(msg, msg.__msgtype__))
            bag_times.append(image_time)
    return bag_times


def test_bag_with_depth_writes_detections_3d_at_the_image_times(tmp_path, tiny_files, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    bag_times = write_rgbd_bag(src)
    args = ["bag", str(src), str(dst), "--image-topic", COLOUR, "--depth-topic", DEPTH, "--points",
            *model_args(tiny_files)]
    assert wps_sam(args) == 0
    assert f"/parts/detections_3d: {FRAMES} messages" in capsys.readouterr().out
    got = read_bag(dst)
    assert {COLOUR, DEPTH, INFO, "/parts/detections_3d", "/parts/points"} <= set(got)
    assert [t for t, _ in got["/parts/detections_3d"]] == bag_times == [t for t, _ in got["/parts/instance_masks"]]
    checked = 0
    for (_, dets), (_, inst), (_, cloud) in zip(got["/parts/detections_3d"], got["/parts/instance_masks"],
                                                got["/parts/points"]):
        instance_map = np.frombuffer(inst.data.tobytes(), "<u2").reshape(inst.height, inst.width)
        expected = expected_centres(instance_map, K)
        assert dets.header.frame_id == "camera_color_optical_frame" and dets.header.stamp == inst.header.stamp
        assert {int(d.id) for d in dets.detections} == set(expected)
        for det in dets.detections:
            p = det.bbox.center.position
            assert (p.x, p.y, p.z) == pytest.approx(expected[int(det.id)], abs=1e-6)
            checked += 1
        assert cloud.width == np.count_nonzero(instance_map) and cloud.height == 1
    assert checked >= FRAMES


def test_depth_outside_the_slop_is_not_paired(tmp_path, tiny_files, caplog):
    src, dst = tmp_path / "in", tmp_path / "out"
    # 40 ms after its image and 60 ms before the next one: more than the default 20 ms slop from both
    write_rgbd_bag(src, depth_offset_ns=40_000_000, period_ns=100_000_000)
    assert wps_sam(["bag", str(src), str(dst), "--image-topic", COLOUR, "--depth-topic", DEPTH,
                    *model_args(tiny_files)]) == 0
    got = read_bag(dst)
    assert "/parts/masks" not in got and f"{FRAMES} image(s) had no depth image within 0.02 s" in caplog.text
    assert wps_sam(["bag", str(src), str(tmp_path / "out2"), "--image-topic", COLOUR, "--depth-topic", DEPTH,
                    "--sync-slop-s", "0.041", *model_args(tiny_files)]) == 0
    assert len(read_bag(tmp_path / "out2")["/parts/detections_3d"]) == FRAMES


@pytest.mark.parametrize("flags, message", [
    (["--depth-topic", "/nope"], "no depth image topic '/nope' (sensor_msgs/msg/Image) in the bag; topics: "),
    (["--depth-topic", DEPTH, "--camera-info-topic", "/calib"], "no CameraInfo topic '/calib'"),
    (["--points"], "--camera-info-topic and --points need --depth-topic"),
    (["--depth-topic", DEPTH, "--sync-slop-s", "0"], r"sync_slop_s must be in [0.0001, 10], got 0.0"),
])
def test_bad_depth_flags_are_one_line(tmp_path, tiny_files, capsys, flags, message):
    src = tmp_path / "in"
    write_rgbd_bag(src)
    code = wps_sam(["bag", str(src), str(tmp_path / "out"), "--image-topic", COLOUR, *flags, *model_args(tiny_files)])
    err = capsys.readouterr().err
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
