"""Live Cyclone DDS on loopback: a camera publisher sends 60 frames at 30 Hz on rt/camera/image_raw, the node
answers on rt/parts/* with the input headers; a slow model drops frames instead of queueing them; with
tracking on, a moving object's part keeps its id in /parts/instances and /parts/instance_masks."""
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

from wps_sam_core.embedded import embedded_available  # noqa: E402
from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.core import load_segmenter  # noqa: E402
from wps_sam_ros.dds import LOOPBACK_CONFIG, DdsBackend, DdsTransport, dds_qos, dds_topic, idl_type  # noqa: E402
from wps_sam_ros.messages import MessageFactory  # noqa: E402
from node_process import NodeProcess  # noqa: E402

from conftest import random_image, wait_until  # noqa: E402
from moving_object import hammer_clip, id_on  # noqa: E402

FRAMES, RATE_HZ = 60, 30.0
DOMAIN_BASE = 100 + (os.getpid() % 40) * 3  # three ids per run; other runs on the machine get others
WATCHED = ("masks", "instance_masks", "instances", "object_masks", "objects", "label_info", "diagnostics", "overlay")


class Camera:
    """Test-side participant: publishes images, reads every part topic (plain DDS, no mocks)."""

    def __init__(self, domain_id: int, qos: topics.QosSpec = topics.SENSOR_DATA_QOS) -> None:
        self.participant = DomainParticipant(domain_id)
        image_type = idl_type(topics.RAW_IMAGE_TYPE)
        self.writer = DataWriter(self.participant, Topic(self.participant, dds_topic("/camera/image_raw"), image_type),
                                 qos=dds_qos(qos))
        self.readers = {}
        for key in WATCHED:
            spec = topics.OUTPUT_TOPICS[key]
            qos = dds_qos(topics.QosSpec("reliable", spec.qos.durability, 200))
            topic = Topic(self.participant, dds_topic(spec.name), idl_type(spec.msg_type))
            self.readers[key] = DataReader(self.participant, topic, qos=qos)
        self.received = {key: [] for key in WATCHED}  # (arrival ns, sample)
        self.factory = MessageFactory(DdsBackend())

    def wait_matched(self, timeout: float = 60.0) -> None:
        if not wait_until(lambda: self.writer.get_matched_subscriptions() and all(
            r.get_matched_publications() for r in self.readers.values()), timeout, step=0.05):
            raise AssertionError("node did not appear on DDS (discovery on loopback failed)")

    def send(self, frames: int = FRAMES, rate_hz: float = RATE_HZ) -> list[int]:
        """Publish frames at a fixed rate; returns their stamps (ns)."""
        images = [random_image(48, 64, seed) for seed in range(4)]
        stamps, start = [], time.monotonic()
        for i in range(frames):
            stamp = time.time_ns()
            self.writer.write(self.factory.image(self.factory.header(stamp, "cam"), images[i % 4], "rgb8"))
            stamps.append(stamp)
            self.poll()
            time.sleep(max(0.0, start + (i + 1) / rate_hz - time.monotonic()))
        return stamps

    def poll(self) -> None:
        now = time.time_ns()
        for key, reader in self.readers.items():
            self.received[key].extend((now, s) for s in reader.take(N=200))

    def wait_for(self, predicate, timeout: float) -> bool:
        return wait_until(predicate, timeout, every=self.poll)

    def stamps(self, key: str) -> list[int]:
        return [s.header.stamp.sec * 10**9 + s.header.stamp.nanosec for _, s in self.received[key]]

    def last_diagnostics(self) -> dict[str, str]:
        _, diag = self.received["diagnostics"][-1]
        return {kv.key: kv.value for kv in diag.status[0].values}


def diagnostics_after(camera: Camera, processed_stamp_count: int, timeout: float = 10.0) -> dict[str, str]:
    """The first /diagnostics that counts every frame as received and settled (processed, dropped or rejected)."""
    def settled():
        if not camera.received["diagnostics"]:
            return False
        v = camera.last_diagnostics()
        done = int(v["frames_processed"]) + int(v["frames_dropped"]) + int(v["frames_rejected"])
        return int(v["frames_processed"]) >= processed_stamp_count and done == int(v["frames_received"])
    assert camera.wait_for(settled, timeout), "diagnostics never settled"
    return camera.last_diagnostics()


PER_FRAME = ("masks", "instance_masks", "instances", "object_masks", "objects")


def answered_on_every_topic(camera: Camera, stamp: int) -> bool:
    """The per-frame topics are published one after another: wait for all of them, not just the first."""
    return all(stamp in camera.stamps(key) for key in PER_FRAME)


def check_headers(camera: Camera, sent: list[int]) -> set[int]:
    """Every output carries the header of a sent frame; the per-frame topics agree frame by frame."""
    answered = set(camera.stamps("masks"))
    assert answered and answered <= set(sent)
    assert set(camera.stamps("instances")) == answered == set(camera.stamps("instance_masks"))
    assert set(camera.stamps("objects")) == answered == set(camera.stamps("object_masks"))
    for key in PER_FRAME:
        assert all(s.header.frame_id == "cam" for _, s in camera.received[key])
    assert sent[-1] in answered  # the freshest frame is never the one dropped
    return answered


def test_node_process_over_dds(tiny_files):
    """`part_seg_node --transport dds` as a separate process, configured with ROS-style arguments."""
    sam_path, prompter_path = tiny_files
    domain_id = DOMAIN_BASE
    node = NodeProcess({"prompter_checkpoint": prompter_path, "sam_checkpoint": sam_path, "device": "cpu",
                        "score_threshold": 0.0, "diagnostics_period": 0.5}, domain_id)
    dom = Domain(domain_id, LOOPBACK_CONFIG)
    try:
        node.start(timeout=90)
        camera = Camera(domain_id)
        camera.wait_matched()
        sent = camera.send()
        assert camera.wait_for(lambda: answered_on_every_topic(camera, sent[-1]), 60), "no answer to the last frame"
        answered = check_headers(camera, sent)
        assert set(camera.stamps("overlay")) <= answered and camera.stamps("overlay")  # we subscribe: it is built
        (_, info), = camera.received["label_info"]  # transient-local: delivered although we joined late
        assert [c.class_name for c in info.class_map][0] == "background" and len(info.class_map) == 4
        values = diagnostics_after(camera, len(answered))
        assert 0.9 * FRAMES <= int(values["frames_received"]) <= FRAMES  # best effort, like a camera driver
        assert int(values["frames_processed"]) == len(answered)
        assert values["device"] == "cpu"
        print(f"\nDDS node process: {FRAMES} frames at {RATE_HZ:.0f} Hz -> {len(answered)} answered, "
              f"{values['frames_dropped']} dropped, inference {values['inference_ms_mean']} ms, "
              f"latency mean {values['latency_ms_mean']} ms / max {values['latency_ms_max']} ms")
    finally:
        node.stop(timeout=20)
        del dom
    assert node.returncode == 0, node.log


class SlowSegmenter:
    """The real tiny segmenter plus a fixed delay per frame: a model far slower than the camera."""

    def __init__(self, segmenter, delay_s: float) -> None:
        self._segmenter, self.delay_s = segmenter, delay_s

    def __getattr__(self, name):
        return getattr(self._segmenter, name)

    def segment(self, image):
        time.sleep(self.delay_s)
        return self._segmenter.segment(image)


def test_slow_model_drops_frames_and_latency_stays_bounded(tiny_files):
    sam_path, prompter_path = tiny_files
    params = {**topics.defaults(), "prompter_checkpoint": str(prompter_path), "sam_checkpoint": str(sam_path),
              "device": "cpu", "score_threshold": 0.0, "diagnostics_period": 0.5, "publish_overlay": False}
    domain_id = DOMAIN_BASE + 1
    dom = Domain(domain_id, LOOPBACK_CONFIG)
    transport = DdsTransport(SlowSegmenter(load_segmenter(params), 0.25), params, domain_id)
    transport.start()
    try:
        camera = Camera(domain_id)
        camera.wait_matched()
        sent = camera.send()
        assert camera.wait_for(lambda: answered_on_every_topic(camera, sent[-1]), 30), "no answer to the last frame"
        answered = check_headers(camera, sent)
        values = diagnostics_after(camera, len(answered))
    finally:
        transport.stop()
        del dom
    received, processed, dropped = (int(values[k]) for k in ("frames_received", "frames_processed", "frames_dropped"))
    frame_s = float(values["inference_ms_max"]) / 1e3  # >= 0.25 s: 7.5 camera frames per inference
    assert 0.9 * FRAMES <= received <= FRAMES and processed == len(answered)
    assert dropped == received - processed > FRAMES // 2
    assert processed <= (FRAMES / RATE_HZ) / 0.25 + 3  # it cannot have answered more than the model allows
    latencies = [(arrival - stamp) / 1e9 for arrival, stamp in zip(
        (t for t, _ in camera.received["masks"]), camera.stamps("masks"))]
    # one frame in flight + its own inference (+ transport); a FIFO queue would reach ~ FRAMES x frame_s
    bound = 2 * frame_s + 0.5
    assert max(latencies) < bound, (latencies, bound)
    assert not camera.received["overlay"]  # publish_overlay false: never built
    print(f"\nslow model ({frame_s * 1e3:.0f} ms/frame): {received} received, {processed} processed, {dropped} dropped; "
          f"latency max {max(latencies) * 1e3:.0f} ms (bound {bound * 1e3:.0f} ms; a queue would give "
          f"~{(FRAMES * frame_s - FRAMES / RATE_HZ) * 1e3:.0f} ms)")


def mono16(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), "<u2").reshape(msg.height, msg.width)


@pytest.mark.skipif(not embedded_available(), reason="embedded default model not built yet")
def test_node_process_publishes_track_ids_that_stay_with_a_moving_part():
    """`part_seg_node --transport dds -p tracking:=true` (embedded model) fed the hammer clip frame by frame (each
    sent once the previous one is answered, reliably, so the node sees every frame): the head's id in
    /parts/instance_masks and its Detection2D.id stay the same; a stamp going back resets, counted in /diagnostics."""
    domain_id = DOMAIN_BASE + 2
    node = NodeProcess({"device": "cpu", "tracking": True, "input_qos": "reliable", "diagnostics_period": 0.2},
                       domain_id)
    dom = Domain(domain_id, LOOPBACK_CONFIG)
    clip = hammer_clip()
    head_ids, stamps = [], []
    try:
        node.start(timeout=120)
        camera = Camera(domain_id, qos=topics.RELIABLE_QOS)
        camera.wait_matched()

        def send(rgb, stamp):
            camera.writer.write(camera.factory.image(camera.factory.header(stamp, "cam"), rgb, "rgb8"))
            assert camera.wait_for(lambda: answered_on_every_topic(camera, stamp), 60), f"no answer to {stamp}"

        for frame in clip:
            stamps.append(time.time_ns())
            send(frame.rgb, stamps[-1])
        send(clip[0].rgb, stamps[0])  # the stream starts over (a bag loop): back to the first stamp
        assert camera.wait_for(lambda: camera.received["diagnostics"]
                               and camera.last_diagnostics().get("tracker_resets") == "1", 10), "no reset counted"
        values = camera.last_diagnostics()
    finally:
        node.stop(timeout=20)
        del dom
    assert node.returncode == 0, node.log
    by_stamp = {key: {s.header.stamp.sec * 10**9 + s.header.stamp.nanosec: s for _, s in camera.received[key]}
                for key in ("instance_masks", "instances", "object_masks", "objects")}
    hammer_ids = []
    for frame, stamp in zip(clip, stamps):
        ids, object_map = mono16(by_stamp["instance_masks"][stamp]), mono16(by_stamp["object_masks"][stamp])
        dets = {int(d.id): d.results[0].hypothesis.class_id for d in by_stamp["instances"][stamp].detections}
        assert set(dets) == set(np.unique(ids)) - {0}  # Detection2D.id = the id in the instance map
        head_ids.append(id_on(frame.parts["hammer_head"], ids))
        assert head_ids[-1] == 0 or dets[head_ids[-1]] == "hammer_head"
        # objects: one per value of the object map, each a hammer whose id is the lowest track id of its parts
        objects = {int(d.id): d.results[0].hypothesis.class_id for d in by_stamp["objects"][stamp].detections}
        assert set(objects) == set(np.unique(object_map)) - {0} and set(objects.values()) <= {"hammer"}
        assert ((object_map > 0) == (ids > 0)).all()
        for object_id in objects:
            assert object_id == min(np.unique(ids[object_map == object_id]))
        hammer_ids.append((id_on(frame.parts["hammer_head"], object_map),
                           id_on(frame.parts["hammer_handle"], object_map)))
    print(f"\nDDS node, tracking: hammer head ids over {len(clip)} frames {head_ids}, its object {hammer_ids}; "
          f"diagnostics {values}")
    # head and handle on one hammer object: in every tracked frame but one (frame 6, where the model splits the
    # handle in three and a fragment joins the head of the scene's second hammer: docs/results.md's limits)
    split = [f for f, (head, handle) in enumerate(hammer_ids) if head_ids[f] and head != handle]
    assert len(split) <= 1 and all(head and handle for head, handle in hammer_ids[1:]), hammer_ids
    # track_min_hits 1: one id from the first frame on; the answer kept for stamps[0] is the one to the frame sent
    # again after the reset (same stamp), so there the head has a new id, never used before
    assert head_ids[1] > 0 and set(head_ids[1:]) == {head_ids[1]} and head_ids[0] > head_ids[1], head_ids
    assert values["tracking"] == "on" and values["tracker_resets (time jumped backwards)"] == "1"
    assert "part tracker reset" in node.log and "backwards" in node.log
