"""`wps-sam bag` on rosbag2 files recorded by other projects (../shared/realbags, see its README).

The Crystal webcam bag has no metadata.yaml, `pkg/Type` names and no stored definitions; the AIT bag is a
rosbag2 folder upstream named `images.bag`. Tests that need the bags skip when ../shared is absent.
"""
from __future__ import annotations

import io
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags (pip) not installed")

from rosbags.rosbag2 import Reader  # noqa: E402

from wps_sam_core.errors import WpsSamError  # noqa: E402
from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.bag import modern_type_name, process_bag  # noqa: E402
from wps_sam_ros.conversions import compressed_to_rgb, image_to_rgb  # noqa: E402
from wps_sam_ros.messages import ros2_typestore  # noqa: E402

REALBAGS = Path(__file__).resolve().parents[2] / "shared" / "realbags"
CRYSTAL = REALBAGS / "klintan_rosbag2js_sample" / "sample.db3"
AIT = REALBAGS / "ait_ros2bag_tools_images"
CRYSTAL_TYPES = {"/text": "std_msgs/msg/String", "/image": "sensor_msgs/msg/Image",
                 "/image/compressed": "sensor_msgs/msg/CompressedImage", "/fix": "sensor_msgs/msg/NavSatFix",
                 "/imu": "sensor_msgs/msg/Imu"}
# what `wps-sam bag` adds without --overlay and without depth: every output but the live node's diagnostics
PART_TYPES = {topics.resolve(spec.name): spec.msg_type for key, spec in topics.OUTPUT_TOPICS.items()
              if key not in ("overlay", "diagnostics", *topics.DEPTH_OUTPUTS)}


@pytest.fixture(scope="module")
def realbags() -> Path:
    if not REALBAGS.is_dir():
        pytest.skip(f"{REALBAGS} absent (a clone without ../shared has no recorded bags)")
    return REALBAGS


@pytest.fixture(scope="module")
def segmenter(realbags):
    from wps_sam_core.embedded import load_embedded_segmenter

    return load_embedded_segmenter("cpu")


def read_back(path: Path) -> tuple[dict[str, str], dict[str, list[tuple[int, bytes]]]]:
    """(topic -> type name as stored, topic -> [(bag time, CDR bytes)]) of a bag, read with rosbags."""
    messages: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, timestamp, raw in reader.messages():
            messages.setdefault(conn.topic, []).append((timestamp, bytes(raw)))
    return types, messages


def decode(raw: bytes, msgtype: str):
    return ros2_typestore().deserialize_cdr(raw, modern_type_name(msgtype))


@pytest.mark.parametrize("name, expected", [
    ("sensor_msgs/Image", "sensor_msgs/msg/Image"),  # Crystal..Eloquent, ROS 1
    ("sensor_msgs/msg/Image", "sensor_msgs/msg/Image"),
    ("example_interfaces/srv/AddTwoInts", "example_interfaces/srv/AddTwoInts"),
    ("Image", "Image"), ("/Image", "/Image"), ("", ""),
])
def test_modern_type_name(name, expected):
    assert modern_type_name(name) == expected


@pytest.mark.parametrize("compressed, image_topic", [("no", "/image"), ("yes", "/image/compressed")],
                         ids=["raw", "compressed"])
def test_crystal_bag_without_metadata_is_segmented(tmp_path, segmenter, compressed, image_topic):
    dst = tmp_path / "out"
    counts = process_bag(CRYSTAL, dst, segmenter, "/image", compressed, overlay=True)
    assert counts == {topic: 1 for topic in [*PART_TYPES, "/parts/overlay"]}
    types, got = read_back(dst)
    assert types == {**CRYSTAL_TYPES, **PART_TYPES, "/parts/overlay": "sensor_msgs/msg/Image"}  # modern names
    _, original = read_back(CRYSTAL)
    assert all(got[topic] == messages for topic, messages in original.items())  # copied byte for byte
    (t_image, raw_image), = original[image_topic]
    image = decode(raw_image, CRYSTAL_TYPES[image_topic])
    for topic in [*PART_TYPES, "/parts/overlay"]:
        (t_part, raw_part), = got[topic]
        assert t_part == t_image, topic  # at the bag time of the image it came from
        if topic != "/parts/label_info":
            assert decode(raw_part, types[topic]).header == image.header, topic
    masks = decode(got["/parts/masks"][0][1], "sensor_msgs/msg/Image")
    assert (masks.height, masks.width) == (480, 640)
    overlay = decode(got["/parts/overlay"][0][1], "sensor_msgs/msg/Image")
    rgb = compressed_to_rgb(image) if compressed == "yes" else image_to_rgb(image)
    labels = masks.data.reshape(480, 640)
    drawn = image_to_rgb(overlay)[:480, :640]
    # background pixels are the input unchanged (bar instance outlines): overlay upright, colours kept
    assert (drawn[labels == 0] == rgb[labels == 0]).all(axis=1).mean() > 0.95


def test_crystal_frames_decode_to_rgb(realbags):
    """/image (bgr8) and /image/compressed ("bgr8; jpeg compressed bgr8") are two different webcam frames
    (another shirt, another room, days apart), so they cannot be compared pixel for pixel."""
    from PIL import Image

    _, messages = read_back(CRYSTAL)
    raw = image_to_rgb(decode(messages["/image"][0][1], "sensor_msgs/Image"))
    jpeg = decode(messages["/image/compressed"][0][1], "sensor_msgs/CompressedImage")
    comp = compressed_to_rgb(jpeg)
    reference = np.asarray(Image.open(io.BytesIO(jpeg.data.tobytes())).convert("RGB"))
    assert raw.shape == comp.shape == (480, 640, 3)
    assert np.abs(comp.astype(int) - reference).mean() < 1.0  # PIL's decoder, independent of OpenCV
    for rgb in (raw, comp):  # warm indoor light and skin: red above blue; swapped channels fail this
        red, _, blue = rgb.reshape(-1, 3).mean(axis=0)
        assert red > blue + 10


def test_crystal_folder_without_metadata(tmp_path, segmenter):
    (tmp_path / "crystal").mkdir()
    shutil.copy(CRYSTAL, tmp_path / "crystal" / CRYSTAL.name)
    counts = process_bag(tmp_path / "crystal", tmp_path / "out", segmenter, "/image", "no")
    assert counts == {topic: 1 for topic in PART_TYPES}


def test_rosbag2_folder_named_dot_bag_is_not_ros1(tmp_path, segmenter):
    """rosbags' AnyReader takes any `*.bag` path for ROS 1 (and fails on the folder); bag.py must not."""
    src = tmp_path / "x.bag"
    shutil.copytree(AIT, src)
    counts = process_bag(src, tmp_path / "out", segmenter, "/image")
    assert counts == {topic: 3 for topic in PART_TYPES} | {"/parts/label_info": 1}
    types, got = read_back(tmp_path / "out")
    assert types == {"/image": "sensor_msgs/msg/Image", **PART_TYPES}
    images = [decode(raw, types["/image"]) for _, raw in got["/image"]]
    assert [t for t, _ in got["/image"]] == [t for t, _ in got["/parts/masks"]] == [0, 10**9, 2 * 10**9]
    for topic in ("/parts/masks", "/parts/instance_masks", "/parts/instances"):
        headers = [decode(raw, types[topic]).header for _, raw in got[topic]]
        assert headers == [m.header for m in images]  # stamps as recorded (nanosec 10**9 kept) and frame
    assert images[1].header.frame_id == "camera_optical_frame" and images[1].header.stamp.nanosec == 10**9


def _crystal_with_unknown_type(folder: Path) -> Path:
    """The Crystal bag with /text renamed to a type no type store knows (the bag holds no definitions)."""
    folder.mkdir()
    path = Path(shutil.copy(CRYSTAL, folder / "custom.db3"))
    path.chmod(0o644)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE topics SET type = 'my_msgs/Thing' WHERE name = '/text'")
    db.close()  # the bag is in WAL mode: closing writes the change into the .db3 that rosbags reads
    return path


BAD_BAGS = {  # case -> (part of) the one-line error
    "unknown-type": "topic /text: type my_msgs/Thing is defined neither in the bag nor in the built-in ROS 2 "
                    "Humble type store; cannot copy it",
    "ros1-file": "old.bag is a ROS 1 bag; convert it to rosbag2 first: rosbags-convert --src",
    "two-db3-no-metadata": "in has no metadata.yaml and a.db3, b.db3; give a single .db3 or .mcap file as IN",
    "not-sqlite": "cannot read bag",
}


@pytest.mark.parametrize("case", list(BAD_BAGS))
def test_bad_bags_are_named(tmp_path, segmenter, case):
    if case == "unknown-type":
        src = _crystal_with_unknown_type(tmp_path / "in")
    elif case == "ros1-file":
        src = tmp_path / "old.bag"
        src.write_bytes(b"#ROSBAG V2.0\n")
    elif case == "two-db3-no-metadata":
        src = tmp_path / "in"
        src.mkdir()
        for name in ("a.db3", "b.db3"):
            shutil.copy(CRYSTAL, src / name)
    else:
        src = tmp_path / "broken.db3"
        src.write_bytes(b"not a database")
    with pytest.raises(WpsSamError, match=re.escape(BAD_BAGS[case])) as info:
        process_bag(src, tmp_path / "out", segmenter, "/image")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # nothing half-written
