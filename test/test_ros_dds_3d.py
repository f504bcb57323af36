"""Live Cyclone DDS on loopback with depth: `part_seg_node --transport dds -p depth_topic:=...` as its own process,
a RealSense-like camera publishing colour, aligned depth (a wall at 1 m, stamped 2 ms after the colour image) and
CameraInfo; the node answers on rt/parts/detections_3d with centres equal to the back-projected parts of the
instance map it publishes for the same frame, and on rt/parts/points while we subscribe."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytest.importorskip("cyclonedds", reason="cyclonedds (pip) not installed")

from cyclonedds.domain import Domain, DomainParticipant  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.sub import DataReader  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402

from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.dds import LOOPBACK_CONFIG, DdsBackend, dds_qos, dds_topic, idl_type  # noqa: E402
from wps_sam_ros.messages import MessageFactory  # noqa: E402
from node_process import NodeProcess  # noqa: E402

from conftest import random_image, wait_until  # noqa: E402
from rgbd import camera_info, depth_image, expected_centres, intrinsics_for  # noqa: E402

# test_dds_wire uses domains 20..99, test_ros_dds 100..219, the rclpy tests 120..179: these are 1..19
DOMAIN_ID = 1 + os.getpid() % 19
H, W, FRAMES, RATE_HZ = 48, 64, 12, 10.0
K = intrinsics_for(H, W)
COLOUR, DEPTH = "/camera/camera/color/image_raw", "/camera/camera/aligned_depth_to_color/image_raw"
WATCHED = ("detections_3d", "instance_masks", "points", "diagnostics")


class RgbdCamera:
    """Test-side participant: colour + depth + CameraInfo writers, readers of the node's outputs (plain DDS)."""

    def __init__(self) -> None:
        self.participant = DomainParticipant(DOMAIN_ID)
        self.factory = MessageFactory(DdsBackend())
        self.writers = {}
        for topic, ros_type in ((COLOUR, topics.RAW_IMAGE_TYPE), (DEPTH, topics.RAW_IMAGE_TYPE),
                                (topics.camera_info_topic(DEPTH), topics.CAMERA_INFO_TYPE)):
            self.writers[topic] = DataWriter(self.participant, Topic(self.participant, dds_topic(topic),
                                                                     idl_type(ros_type)),
                                             qos=dds_qos(topics.SENSOR_DATA_QOS, ros_type))
        self.readers = {}
        for key in WATCHED:
            spec = topics.OUTPUT_TOPICS[key]
            topic = Topic(self.participant, dds_topic(spec.name), idl_type(spec.msg_type))
            self.readers[key] = DataReader(self.participant, topic, qos=dds_qos(topics.QosSpec("reliable",
                                                                                               "volatile", 100)))
        self.received: dict[str, list] = {key: [] for key in WATCHED}

    def wait_matched(self, timeout: float = 60.0) -> None:
        if not wait_until(lambda: all(w.get_matched_subscriptions() for w in self.writers.values()) and all(
            r.get_matched_publications() for r in self.readers.values()), timeout, step=0.05):
            raise AssertionError("node did not appear on DDS (discovery on loopback failed)")

    def send(self) -> list[int]:
        stamps, start = [], time.monotonic()
        for i in range(FRAMES):
            stamp = time.time_ns()
            header = self.factory.header(stamp, "camera_color_optical_frame")
            depth_header = self.factory.header(stamp + 2_000_000, "camera_color_optical_frame")
            self.writers[topics.camera_info_topic(DEPTH)].write(camera_info(self.factory, depth_header, K))
            self.writers[DEPTH].write(depth_image(self.factory, depth_header, np.ones((H, W), np.float32)))
            self.writers[COLOUR].write(self.factory.image(header, random_image(H, W, i % 4), "rgb8"))
            stamps.append(stamp)
            self.poll()
            time.sleep(max(0.0, start + (i + 1) / RATE_HZ - time.monotonic()))
        return stamps

    def poll(self) -> None:
        for key, reader in self.readers.items():
            self.received[key].extend(reader.take(N=100))

    def by_stamp(self, key: str) -> dict[int, object]:
        return {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for m in self.received[key]}

    def wait_for(self, predicate, timeout: float) -> bool:
        return wait_until(predicate, timeout, every=self.poll)


def test_node_process_publishes_detections_3d_from_colour_depth_and_camera_info(tiny_files):
    sam_path, prompter_path = tiny_files
    node = NodeProcess({"prompter_checkpoint": prompter_path, "sam_checkpoint": sam_path, "device": "cpu",
                        "score_threshold": 0.0, "diagnostics_period": 0.3, "image_topic": COLOUR,
                        "depth_topic": DEPTH, "sync_slop_s": 0.01}, DOMAIN_ID)
    dom = Domain(DOMAIN_ID, LOOPBACK_CONFIG)
    try:
        node.start(timeout=90)
        camera = RgbdCamera()
        camera.wait_matched()
        sent = camera.send()
        assert camera.wait_for(lambda: sent[-1] in camera.by_stamp("detections_3d")
                               and sent[-1] in camera.by_stamp("points"), 60), "no 3D answer to the last frame"

        def diagnostics_settled():
            values = {kv.key: kv.value for kv in camera.received["diagnostics"][-1].status[0].values} \
                if camera.received["diagnostics"] else {}
            return values.get("frames_3d") == str(len(camera.by_stamp("detections_3d"))) and values
        assert camera.wait_for(diagnostics_settled, 10)
        values = diagnostics_settled()
    finally:
        node.stop(timeout=20)
        del dom
    assert node.returncode == 0, node.log
    dets, instance_maps, clouds = (camera.by_stamp(key) for key in ("detections_3d", "instance_masks", "points"))
    assert set(dets) <= set(sent) and set(dets) == set(instance_maps)  # every answered frame got its 3D
    checked = 0
    for stamp, msg in dets.items():
        inst = instance_maps[stamp]
        instance_map = np.frombuffer(bytes(inst.data), "<u2").reshape(inst.height, inst.width)
        expected = expected_centres(instance_map, K)
        assert {int(d.id) for d in msg.detections} == set(expected)
        for det in msg.detections:
            p = det.bbox.center.position
            assert (p.x, p.y, p.z) == pytest.approx(expected[int(det.id)], abs=1e-6)
            checked += 1
        assert msg.header.frame_id == "camera_color_optical_frame"
        if stamp in clouds:
            assert clouds[stamp].width == np.count_nonzero(instance_map) and clouds[stamp].point_step == 20
    assert checked > 0 and values["camera_info"] == "received" and values["frames_3d_rejected"] == "0"
    print(f"\nDDS node with depth: {FRAMES} colour+depth+CameraInfo frames at {RATE_HZ:.0f} Hz -> {len(dets)} "
          f"with detections_3d ({checked} parts, centres exact to 1e-6 m), {values['frames_dropped']} dropped")
