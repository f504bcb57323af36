"""What a ROS 2 Jazzy peer on rmw_cyclonedds checks of the DDS transport, on real Cyclone DDS (loopback):

- the RIHS01 type hash in every endpoint's USER_DATA (`typehash=RIHS01_<hex>;`), as discovery carries it
  to other participants (DCPSPublication / DCPSSubscription, what `ros2 topic info -v` shows);
- a publisher that disposes, unregisters or leaves delivers an invalid sample: not a frame, not rejected.
"""
from __future__ import annotations

import gc
import os
import time

import pytest

pytest.importorskip("cyclonedds", reason="cyclonedds (pip) not installed")
pytest.importorskip("rosbags", reason="rosbags not installed")

from cyclonedds.builtin import (BuiltinDataReader, BuiltinTopicDcpsPublication,  # noqa: E402
                                BuiltinTopicDcpsSubscription)
from cyclonedds.domain import Domain, DomainParticipant  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.qos import Policy, Qos  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402

from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.core import load_segmenter  # noqa: E402
from wps_sam_ros.dds import (LOOPBACK_CONFIG, DdsBackend, DdsTransport, dds_qos, dds_topic,  # noqa: E402
                             dds_type_name, idl_type, type_hash, user_data)
from wps_sam_ros.messages import MessageFactory, OK, ros2_typestore  # noqa: E402
from node_process import NodeProcess  # noqa: E402

from conftest import random_image, wait_until  # noqa: E402

# test_ros_dds uses domains 100..219 and soak_dds 220..231; one id per test run here.
DOMAIN_ID = 20 + os.getpid() % 80

# Jazzy's own values, as rosidl generates them into <type>__description.c / `ros2 topic info -v` prints them.
JAZZY_HASHES = {
    "sensor_msgs/msg/Image": "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
    "sensor_msgs/msg/CompressedImage": "RIHS01_15640771531571185e2efc8a100baf923961a4d15d5569652e6cb6691e8e371a",
    "diagnostic_msgs/msg/DiagnosticArray": "RIHS01_5a8a36efb05fb25070fa0fb3810290c0e6cd4862b54a8fb975a1ee8dc55a333e",
    "vision_msgs/msg/Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "vision_msgs/msg/LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "vision_msgs/msg/Detection3DArray": "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "sensor_msgs/msg/PointCloud2": "RIHS01_9198cabf7da3796ae6fe19c4cb3bdd3525492988c70522628af5daa124bae2b5",
    "sensor_msgs/msg/CameraInfo": "RIHS01_b3dfd68ff46c9d56c80fd3bd4ed22c7a4ddce8c8348f2f59c299e73118e7e275",
}
NODE_TYPES = sorted({spec.msg_type for spec in topics.OUTPUT_TOPICS.values()}
                    | {topics.RAW_IMAGE_TYPE, topics.COMPRESSED_IMAGE_TYPE, topics.CAMERA_INFO_TYPE})


def userdata_of(qos: Qos) -> bytes | None:
    for policy in qos:
        if isinstance(policy, Policy.Userdata):
            return policy.data
    return None


# ---- type hashes ---------------------------------------------------------------------------------
def test_type_hashes_are_jazzys():
    assert set(JAZZY_HASHES) == set(NODE_TYPES)  # every type the node sends or receives has a known value
    for ros_type, expected in JAZZY_HASHES.items():
        assert type_hash(ros_type) == expected, ros_type
        # byte for byte what rmw_dds_common::encode_type_hash_for_user_data_qos writes
        assert user_data(ros_type) == b"typehash=" + expected.encode() + b";"


def test_humble_layouts_hash_like_jazzy():
    """The IdlStruct layouts are generated from the Humble store: same hash = same fields, types and order."""
    for ros_type in NODE_TYPES:
        assert ros2_typestore().hash_rihs01(ros_type) == type_hash(ros_type), ros_type


def test_qos_with_a_type_carries_the_hash_and_without_none():
    assert userdata_of(dds_qos(topics.OUTPUT_QOS, "sensor_msgs/msg/Image")) == user_data("sensor_msgs/msg/Image")
    assert userdata_of(dds_qos(topics.OUTPUT_QOS)) is None


# ---- the transport's endpoints -------------------------------------------------------------------
@pytest.fixture(scope="module")
def segmenter_params(tiny_files):
    sam_path, prompter_path = tiny_files
    params = {**topics.defaults(), "prompter_checkpoint": str(prompter_path), "sam_checkpoint": str(sam_path),
              "device": "cpu", "score_threshold": 0.0, "diagnostics_period": 0.5, "publish_overlay": False}
    return load_segmenter(params), params


@pytest.mark.parametrize("image_transport, depth_topic", [("raw", ""), ("compressed", "/wire_depth/image_raw")])
def test_transport_writers_and_reader_carry_the_type_hash(segmenter_params, image_transport, depth_topic):
    """Every endpoint carries its type hash; a 2D node (no depth_topic) advertises no 3D topic."""
    segmenter, params = segmenter_params
    params = {**params, "image_topic": f"/wire_qos_{os.getpid()}/image", "image_transport": image_transport,
              "depth_topic": depth_topic}
    dom = Domain(DOMAIN_ID, LOOPBACK_CONFIG)
    transport = DdsTransport(segmenter, params, DOMAIN_ID)
    try:
        expected = set(topics.OUTPUT_TOPICS) - (set() if depth_topic else set(topics.DEPTH_OUTPUTS))
        assert set(transport.writers) == expected
        for key, writer in transport.writers.items():
            ros_type = topics.OUTPUT_TOPICS[key].msg_type
            assert userdata_of(writer.get_qos()) == b"typehash=" + JAZZY_HASHES[ros_type].encode() + b";", key
        in_type = topics.COMPRESSED_IMAGE_TYPE if image_transport == "compressed" else topics.RAW_IMAGE_TYPE
        assert userdata_of(transport.reader.get_qos()) == b"typehash=" + JAZZY_HASHES[in_type].encode() + b";"
    finally:
        transport.stop()
        del dom


def test_node_process_type_hashes_reach_other_participants(tiny_files):
    """The node as its own process; another participant reads its endpoints from discovery, as ROS 2 does."""
    sam_path, prompter_path = tiny_files
    namespace_topic = f"/wire_{os.getpid()}/image"
    depth_topic = f"/wire_{os.getpid()}/depth/image_raw"  # with depth: every output type is on the wire
    node = NodeProcess({"prompter_checkpoint": prompter_path, "sam_checkpoint": sam_path, "device": "cpu",
                        "image_topic": namespace_topic, "depth_topic": depth_topic}, DOMAIN_ID)
    dom = Domain(DOMAIN_ID, LOOPBACK_CONFIG)
    expected = {(dds_topic(spec.name), dds_type_name(spec.msg_type)): user_data(spec.msg_type)
                for spec in topics.OUTPUT_TOPICS.values()}
    expected_sub = {(dds_topic(topic), dds_type_name(ros_type)): user_data(ros_type)
                    for topic, ros_type in ((namespace_topic, topics.RAW_IMAGE_TYPE), (depth_topic, topics.RAW_IMAGE_TYPE),
                                            (topics.camera_info_topic(depth_topic), topics.CAMERA_INFO_TYPE))}
    try:
        node.start(timeout=90)
        observer = DomainParticipant(DOMAIN_ID)
        pubs = BuiltinDataReader(observer, BuiltinTopicDcpsPublication)
        subs = BuiltinDataReader(observer, BuiltinTopicDcpsSubscription)
        seen_pub: dict = {}
        seen_sub: dict = {}

        def collect():
            for reader, seen in ((pubs, seen_pub), (subs, seen_sub)):
                for ep in reader.take(N=100):
                    if getattr(ep, "topic_name", None) and ep.participant_key != observer.guid:
                        seen[(ep.topic_name, ep.type_name)] = userdata_of(ep.qos)
            return set(expected) <= set(seen_pub) and set(expected_sub) <= set(seen_sub)

        assert wait_until(collect, 30), (seen_pub, seen_sub, node.log)
        assert {k: seen_pub[k] for k in expected} == expected
        assert {k: seen_sub[k] for k in expected_sub} == expected_sub
    finally:
        node.stop(timeout=20)
        del dom
    assert node.returncode == 0, node.log


# ---- a publisher leaving ---------------------------------------------------------------------------
FRAMES = 5


@pytest.mark.parametrize("leave", ["dispose", "unregister", "writer-deleted"])
def test_publisher_leaving_is_not_a_frame(segmenter_params, leave):
    """dispose / unregister_instance / a ROS 2 publisher exiting (rmw_cyclonedds: autodispose off, the writer
    is deleted, the reader gets NOT_ALIVE_NO_WRITERS): counted neither as received nor as rejected."""
    segmenter, params = segmenter_params
    image_topic = f"/wire_leave_{os.getpid()}_{leave.replace('-', '_')}/image"
    params = {**params, "image_topic": image_topic, "input_qos": "reliable"}
    dom = Domain(DOMAIN_ID, LOOPBACK_CONFIG)
    transport = DdsTransport(segmenter, params, DOMAIN_ID)
    transport.start()
    try:
        camera = DomainParticipant(DOMAIN_ID)
        qos = dds_qos(topics.RELIABLE_QOS, topics.RAW_IMAGE_TYPE) + Qos(Policy.WriterDataLifecycle(autodispose=False))
        writer = DataWriter(camera, Topic(camera, dds_topic(image_topic), idl_type(topics.RAW_IMAGE_TYPE)), qos=qos)
        assert wait_until(lambda: writer.get_matched_subscriptions(), 30), "transport did not match the camera"
        factory = MessageFactory(DdsBackend())
        stats = transport.core.stats
        for i in range(FRAMES):  # one at a time: the reader's keep-last history never overflows
            frame = factory.image(factory.header(time.time_ns(), "cam"), random_image(24, 32, i), "rgb8")
            writer.write(frame)
            assert wait_until(lambda: stats.received == i + 1, 10), f"frame {i} not received"

        if leave == "dispose":
            writer.dispose(frame)
        elif leave == "unregister":
            writer.unregister_instance(frame)
        else:
            del writer
            gc.collect()
        # taken by the transport, either way: skipped (fixed) or submitted as a frame (the defect)
        assert wait_until(lambda: transport.invalid_samples + stats.received > FRAMES, 10), "nothing after the frames"
        assert wait_until(lambda: stats.processed + stats.dropped + stats.rejected == stats.received, 30)
        status = transport.core.diagnostics_message().status[0]
    finally:
        transport.stop()
        del dom
    assert (stats.received, stats.rejected) == (FRAMES, 0), stats.last_problem
    assert transport.invalid_samples >= 1 and stats.processed >= 1
    assert (status.level, status.message) == (OK, "segmenting")  # /diagnostics stays OK
