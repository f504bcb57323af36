"""Every output message survives rosbags' ROS 2 CDR serializer (Humble + vision_msgs), and the Cyclone
DDS types write the very same bytes: the wire-compatibility proof for bags and live DDS."""
from __future__ import annotations

import numpy as np
import pytest

from wps_sam_core.postprocess.geometry3d import CameraIntrinsics, lift_to_3d, part_points
from wps_sam_core.postprocess.objects import with_objects
from wps_sam_core.segmenter import assemble
from wps_sam_ros import topics
from wps_sam_ros.messages import BACKGROUND_NAME, WARN, MessageFactory, RosbagsBackend, ros2_typestore

CLASSES = ["mug_body", "mug_handle", "car_wheel"]
STAMP_NS = 1_700_000_123_000_000_456


def sample_segmentation():
    h, w = 12, 20
    masks = np.zeros((3, h, w), bool)
    masks[0, 2:8, 3:9] = True
    masks[1, 5:11, 6:15] = True  # overlaps the first; lower score, so partly hidden
    masks[2, 0:3, 16:20] = True
    seg = assemble(masks, np.array([1, 2, 3]), np.array([0.9, 0.7, 0.8]), np.array([0.5, 0.6, 0.7]), CLASSES)
    return with_objects(seg, ["mug", "mug", "car"])  # body + handle: one mug; the wheel: a car


def sample_depth(seg):
    """A plane at 1 m (K: f = 20 px, principal point at the centre), no depth in the third part."""
    depth = np.ones(seg.labels.shape, np.float32)
    depth[0:3, 16:20] = 0.0
    return depth, CameraIntrinsics(20.0, 20.0, 9.5, 5.5, seg.labels.shape[1], seg.labels.shape[0])


def all_outputs(factory: MessageFactory) -> dict:
    header = factory.header(STAMP_NS, "camera_optical")
    seg = sample_segmentation()
    overlay = np.full((*seg.labels.shape, 3), 7, np.uint8)
    out = factory.part_messages(header, seg, overlay)
    depth, intrinsics = sample_depth(seg)
    out.update(factory.part_messages_3d(header, lift_to_3d(seg, depth, intrinsics), part_points(seg, depth, intrinsics)))
    out["label_info"] = factory.label_info(factory.header(STAMP_NS), CLASSES, 0.25)
    out["diagnostics"] = factory.diagnostics(factory.header(STAMP_NS), [(WARN, "part_seg", "msg", "cpu", {"fps": 3.5})])
    return out


@pytest.fixture(scope="module")
def rosbags_outputs():
    return all_outputs(MessageFactory(RosbagsBackend()))


def test_outputs_cover_every_topic(rosbags_outputs):
    assert set(rosbags_outputs) == set(topics.OUTPUT_TOPICS)
    for key, msg in rosbags_outputs.items():
        assert msg.__msgtype__ == topics.OUTPUT_TOPICS[key].msg_type


@pytest.mark.parametrize("key", sorted(topics.OUTPUT_TOPICS))
def test_cdr_round_trip(rosbags_outputs, key):
    store = ros2_typestore()
    msg = rosbags_outputs[key]
    raw = store.serialize_cdr(msg, msg.__msgtype__)
    back = store.deserialize_cdr(raw, msg.__msgtype__)
    assert bytes(store.serialize_cdr(back, msg.__msgtype__)) == bytes(raw)
    assert back.header.stamp.sec == STAMP_NS // 10**9 and back.header.stamp.nanosec == STAMP_NS % 10**9
    if key in ("masks", "instance_masks", "overlay"):
        assert np.array_equal(back.data, msg.data) and back.step * back.height == len(back.data)
    if key == "points":
        assert np.array_equal(back.data, msg.data) and back.row_step * back.height == len(back.data) > 0


def test_detections_content_and_link_to_instance_map(rosbags_outputs):
    store = ros2_typestore()
    dets = store.deserialize_cdr(store.serialize_cdr(rosbags_outputs["instances"], "vision_msgs/msg/Detection2DArray"),
                                 "vision_msgs/msg/Detection2DArray")
    inst_msg = rosbags_outputs["instance_masks"]
    assert inst_msg.encoding == "mono16" and inst_msg.is_bigendian == 0
    instance_map = np.frombuffer(inst_msg.data.tobytes(), "<u2").reshape(inst_msg.height, inst_msg.width)
    labels = rosbags_outputs["masks"]
    label_map = np.frombuffer(labels.data.tobytes(), np.uint8).reshape(labels.height, labels.width)
    assert labels.encoding == "mono8"
    assert {int(d.id) for d in dets.detections} == set(np.unique(instance_map)) - {0}
    for det in dets.detections:
        region = instance_map == int(det.id)
        (hyp,) = det.results
        assert set(np.unique(label_map[region])) == {CLASSES.index(hyp.hypothesis.class_id) + 1}
        ys, xs = np.nonzero(region)
        assert det.bbox.center.position.x == pytest.approx((xs.min() + xs.max() + 1) / 2)
        assert det.bbox.size_y == pytest.approx(ys.max() + 1 - ys.min())
        assert det.header.frame_id == "camera_optical"
        assert hyp.pose.pose.orientation.w == 1.0 and len(hyp.pose.covariance) == 36
    assert [d.results[0].hypothesis.score for d in dets.detections] == pytest.approx([0.9, 0.8, 0.7])


def test_objects_and_the_object_map_name_each_parts_object(rosbags_outputs):
    """/parts/objects: one detection per object (id, object class, best part score, union box); the object map
    gives every pixel of part "i" the id of that part's object."""
    store = ros2_typestore()
    objects = store.deserialize_cdr(store.serialize_cdr(rosbags_outputs["objects"], "vision_msgs/msg/Detection2DArray"),
                                    "vision_msgs/msg/Detection2DArray")
    inst_msg, obj_msg = rosbags_outputs["instance_masks"], rosbags_outputs["object_masks"]
    assert obj_msg.encoding == "mono16" and obj_msg.is_bigendian == 0 and obj_msg.header.frame_id == "camera_optical"
    instance_map = np.frombuffer(inst_msg.data.tobytes(), "<u2").reshape(inst_msg.height, inst_msg.width)
    object_map = np.frombuffer(obj_msg.data.tobytes(), "<u2").reshape(obj_msg.height, obj_msg.width)
    summary = [(d.id, d.results[0].hypothesis.class_id, d.results[0].hypothesis.score) for d in objects.detections]
    assert summary == [("1", "mug", pytest.approx(0.9)), ("2", "car", pytest.approx(0.8))]
    parts = {inst: set(np.unique(object_map[instance_map == inst])) for inst in np.unique(instance_map) if inst}
    assert parts == {1: {1}, 2: {2}, 3: {1}}  # body (1) and handle (3) on mug 1, the wheel (2) on car 2
    assert ((object_map == 0) == (instance_map == 0)).all()
    mug = objects.detections[0]
    ys, xs = np.nonzero(object_map == 1)  # the union of the mug's parts
    assert mug.bbox.center.position.x == pytest.approx((xs.min() + xs.max() + 1) / 2)
    assert mug.bbox.size_x == pytest.approx(xs.max() + 1 - xs.min()) and mug.bbox.size_y == pytest.approx(ys.max() + 1 - ys.min())


def test_label_info_and_diagnostics_content(rosbags_outputs):
    info = rosbags_outputs["label_info"]
    assert [(c.class_id, c.class_name) for c in info.class_map] == list(enumerate([BACKGROUND_NAME, *CLASSES]))
    assert info.threshold == pytest.approx(0.25)
    (status,) = rosbags_outputs["diagnostics"].status
    assert status.level == WARN and {kv.key: kv.value for kv in status.values} == {"fps": "3.5"}


def test_mono16_label_map_past_255_classes():
    names = [f"c{i}" for i in range(300)]
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 1:3, 1:3] = True
    seg = assemble(masks, np.array([290]), np.array([0.9]), np.array([0.9]), names)
    factory = MessageFactory(RosbagsBackend())
    msg = factory.part_messages(factory.header(0), seg, None)["masks"]
    assert msg.encoding == "mono16" and msg.step == 8
    assert np.frombuffer(msg.data.tobytes(), "<u2").reshape(4, 4)[1, 1] == 290


@pytest.mark.parametrize("key", sorted(topics.OUTPUT_TOPICS))
def test_cyclone_dds_bytes_equal_ros2_cdr(rosbags_outputs, key):
    """The live DDS transport's samples are the bytes rmw_cyclonedds would put on the wire."""
    pytest.importorskip("cyclonedds", reason="cyclonedds (pip) not installed")
    from wps_sam_ros.dds import DdsBackend, dds_type_name

    dds_msg = all_outputs(MessageFactory(DdsBackend()))[key]
    ros_msg = rosbags_outputs[key]
    assert type(dds_msg).__idl_typename__ == dds_type_name(ros_msg.__msgtype__)
    expected = bytes(ros2_typestore().serialize_cdr(ros_msg, ros_msg.__msgtype__))
    assert dds_msg.serialize() == expected
    back = type(dds_msg).deserialize(expected)
    assert back.header.stamp.nanosec == STAMP_NS % 10**9


def test_dds_names():
    from wps_sam_ros.dds import dds_topic, dds_type_name

    assert dds_type_name("vision_msgs/msg/Detection2DArray") == "vision_msgs::msg::dds_::Detection2DArray_"
    assert dds_topic(topics.OUTPUT_TOPICS["masks"].name) == "rt/parts/masks"
    assert dds_topic(topics.OUTPUT_TOPICS["masks"].name, "robot1") == "rt/robot1/parts/masks"
    assert dds_topic(topics.OUTPUT_TOPICS["diagnostics"].name, "robot1") == "rt/diagnostics"


def test_rclpy_backend_builds_real_messages():
    pytest.importorskip("rclpy", reason="rclpy not installed (no ROS 2 environment sourced)")
    pytest.importorskip("vision_msgs", reason="ros-<distro>-vision-msgs not installed")
    from rclpy.serialization import serialize_message

    from wps_sam_ros.messages import RclpyBackend

    out = all_outputs(MessageFactory(RclpyBackend()))
    store = ros2_typestore()
    for key, msg in out.items():
        ros_type = topics.OUTPUT_TOPICS[key].msg_type
        expected = bytes(store.serialize_cdr(all_outputs(MessageFactory(RosbagsBackend()))[key], ros_type))
        assert serialize_message(msg) == expected, key
