"""`wps-sam bag` on real rosbag2 files (sqlite3 and MCAP, raw and compressed), written with rosbags here; with
--tracking, a moving object's part keeps its id over the bag."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags (pip) not installed")

from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: E402

from wps_sam_core.cli import main as wps_sam  # noqa: E402
from wps_sam_core.embedded import embedded_available  # noqa: E402
from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.conversions import encode_compressed  # noqa: E402
from wps_sam_ros.messages import MessageFactory, RosbagsBackend, ros2_typestore  # noqa: E402

from conftest import random_image  # noqa: E402
from moving_object import FRAME_NS, hammer_clip, id_on  # noqa: E402

FRAMES = 4
PART_TOPICS = {"/parts/masks", "/parts/instance_masks", "/parts/instances", "/parts/object_masks", "/parts/objects"}


def write_bag(path: Path, storage: StoragePlugin, compressed: bool) -> dict:
    """A camera bag: FRAMES images (bag time = header stamp + 1 us) and an unrelated /chatter topic."""
    store = ros2_typestore()
    factory = MessageFactory(RosbagsBackend(store))
    image_topic = "/camera/image_raw" + ("/compressed" if compressed else "")
    image_type = topics.COMPRESSED_IMAGE_TYPE if compressed else topics.RAW_IMAGE_TYPE
    expected = {"image_topic": image_topic, "bag_times": [], "stamps": []}
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=storage) as writer:
        images = writer.add_connection(image_topic, image_type, typestore=store)
        chatter = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        for i in range(FRAMES):
            stamp = 1_700_000_000_000_000_000 + i * 33_000_000
            header = factory.header(stamp, "camera")
            rgb = random_image(40, 56, i)
            if compressed:
                msg = factory.compressed_image(header, *encode_compressed(rgb, "jpeg"))
            else:
                msg = factory.image(header, rgb, "rgb8")
            writer.write(images, stamp + 1000, store.serialize_cdr(msg, image_type))
            expected["bag_times"].append(stamp + 1000)
            expected["stamps"].append(stamp)
            if i % 2 == 0:
                text = store.types["std_msgs/msg/String"](data=f"hello {i}")
                writer.write(chatter, stamp + 5, store.serialize_cdr(text, "std_msgs/msg/String"))
    return expected


def read_bag(path: Path) -> dict[str, list]:
    store = ros2_typestore()
    out: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, timestamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((timestamp, store.deserialize_cdr(raw, conn.msgtype)))
    return out


def model_args(tiny_files) -> list[str]:
    sam_path, prompter_path = tiny_files
    return ["--prompter", str(prompter_path), "--sam-checkpoint", str(sam_path), "--device", "cpu",
            "--score-threshold", "0"]


@pytest.mark.parametrize("storage, compressed", [(StoragePlugin.SQLITE3, False), (StoragePlugin.MCAP, True)],
                         ids=["sqlite3-raw", "mcap-compressed"])
def test_bag_adds_part_topics_at_the_image_timestamps(tmp_path, tiny_files, storage, compressed, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    expected = write_bag(src, storage, compressed)
    extra = ["--overlay"] if compressed else []
    assert wps_sam(["bag", str(src), str(dst), "--image-topic", "/camera/image_raw", *model_args(tiny_files), *extra]) == 0
    assert f"/parts/masks: {FRAMES} messages" in capsys.readouterr().out
    got, original = read_bag(dst), read_bag(src)
    suffix = ".mcap" if storage == StoragePlugin.MCAP else ".db3"
    assert [p.suffix for p in dst.iterdir() if p.name != "metadata.yaml"] == [suffix]  # input's storage kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # the staging folder is gone
    for topic, messages in original.items():  # input topics copied unchanged
        assert [t for t, _ in got[topic]] == [t for t, _ in messages]
    parts = PART_TOPICS | ({"/parts/overlay"} if compressed else set())
    assert set(got) == set(original) | parts | {"/parts/label_info"}
    for topic in parts:
        assert [t for t, _ in got[topic]] == expected["bag_times"], topic
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in got[topic]]
        assert stamps == expected["stamps"] and all(m.header.frame_id == "camera" for _, m in got[topic])
    (t_info, info), = got["/parts/label_info"]
    assert t_info == expected["bag_times"][0] and info.class_map[0].class_name == "background"
    for (_, masks), (_, inst), (_, dets), (_, omap), (_, objs) in zip(
            got["/parts/masks"], got["/parts/instance_masks"], got["/parts/instances"], got["/parts/object_masks"],
            got["/parts/objects"]):
        ids = np.frombuffer(inst.data.tobytes(), "<u2").reshape(inst.height, inst.width)
        assert (masks.height, masks.width) == (40, 56)
        assert {int(d.id) for d in dets.detections} == set(np.unique(ids)) - {0}
        # /parts/objects read back: one detection per object id of the object map, named by the object class
        object_map = ids_image(omap)
        assert {int(d.id) for d in objs.detections} == set(np.unique(object_map)) - {0}
        assert ((object_map > 0) == (ids > 0)).all() and {d.results[0].hypothesis.class_id for d in objs.detections} <= {
            "mug", "car"}  # TEST_CLASSES mug_body, mug_handle, car_wheel


def test_bag_errors_are_one_line_and_leave_nothing(tmp_path, tiny_files, capsys):
    src = tmp_path / "in"
    write_bag(src, StoragePlugin.SQLITE3, compressed=False)
    assert wps_sam(["bag", str(src), str(tmp_path / "out"), "--image-topic", "/nope", *model_args(tiny_files)]) == 2
    err = capsys.readouterr().err
    assert "/nope" in err and "/camera/image_raw" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no partial output, no staging folder
    assert wps_sam(["bag", str(src), str(src), "--image-topic", "/camera/image_raw", *model_args(tiny_files)]) == 2
    assert "exists already" in capsys.readouterr().err


def ids_image(msg) -> np.ndarray:
    return np.frombuffer(msg.data.tobytes(), "<u2").reshape(msg.height, msg.width)


@pytest.mark.skipif(not embedded_available(), reason="embedded default model not built yet")
def test_bag_tracking_keeps_a_moving_parts_id_and_resets_when_the_stamps_loop(tmp_path, caplog):
    """The hammer clip, then its first 3 frames again with their old header stamps (a player looping while
    recording); the embedded model. --tracking: the head's id stays from frame 1 on, the loop resets the tracker
    (logged) and the head gets a new id (never used before); without the flag the head's per-frame id changes; label maps equal."""
    store = ros2_typestore()
    factory = MessageFactory(RosbagsBackend(store))
    clip = hammer_clip()
    t0 = 1_700_000_000_000_000_000
    sequence = [(f, t0 + f * FRAME_NS) for f in range(len(clip))] + [(f, t0 + f * FRAME_NS) for f in range(3)]
    src = tmp_path / "in"
    with Writer(src, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/camera/image_raw", topics.RAW_IMAGE_TYPE, typestore=store)
        for i, (f, stamp) in enumerate(sequence):
            msg = factory.image(factory.header(stamp, "camera"), clip[f].rgb, "rgb8")
            writer.write(conn, t0 + i * FRAME_NS, store.serialize_cdr(msg, topics.RAW_IMAGE_TYPE))
    runs = {}
    for name, extra in (("tracked", ["--tracking"]), ("plain", [])):
        with caplog.at_level("INFO"):
            assert wps_sam(["bag", str(src), str(tmp_path / name), "--image-topic", "/camera/image_raw",
                            "--device", "cpu", *extra]) == 0
        runs[name] = read_bag(tmp_path / name)
    head = {}
    for name, got in runs.items():
        head[name] = []
        for (f, _), (_, inst), (_, dets) in zip(sequence, got["/parts/instance_masks"], got["/parts/instances"]):
            ids = ids_image(inst)
            assert {int(d.id) for d in dets.detections} == set(np.unique(ids)) - {0}
            head[name].append(id_on(clip[f].parts["hammer_head"], ids))
    assert [m.data.tobytes() for _, m in runs["tracked"]["/parts/masks"]] == [
        m.data.tobytes() for _, m in runs["plain"]["/parts/masks"]]
    tracked, n = head["tracked"], len(clip)
    # track_min_hits 1 (the default): the head has its id from the first frame on
    assert tracked[0] > 0 and set(tracked[:n]) == {tracked[0]}, tracked
    assert tracked[n] > tracked[0] and tracked[n + 1] == tracked[n + 2] == tracked[n], tracked  # new id after the loop
    assert len(set(head["plain"][:n])) > 1, head["plain"]
    assert any("part tracker reset: time jumped backwards" in r.getMessage() for r in caplog.records)
    assert any("tracker reset 1 time(s) (1 x time jumped backwards)" in r.getMessage() for r in caplog.records)
