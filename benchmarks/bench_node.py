"""P3: the node over Cyclone DDS (loopback) fed at 30 Hz with the tiny model -> one JSON line.

`part_seg_node --transport dds` runs as its own process, exactly as deployed without ROS 2; this
script is the camera: it publishes sensor_msgs/Image at a fixed rate on rt/camera/image_raw and
timestamps every rt/parts/masks sample on arrival (a DDS listener, not a polling loop). Reported:
  latency_ms    arrival - header.stamp (the camera's publish time), p50 / p95 / max
  processing    period = median gap between consecutive answers (= 1 / processed fps when the node is
                busy), the node's own inference time from /diagnostics
  frames        sent / received by the node / processed / dropped by the latest-frame slot / unanswered
  rss           the node's resident memory after warm-up and at the end, growth in % (< 5%)
Target: p95 latency <= 2 processing periods (no backlog: a frame waits at most for the one in flight).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from common import emit, machine, tiny_model_files

TARGET_P95_PERIODS = 2.0
MAX_RSS_GROWTH_PCT = 5.0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Camera:
    """Publishes images; records (arrival ns, stamp ns) of every masks sample from a listener thread."""

    def __init__(self, domain_id: int) -> None:
        from cyclonedds.core import Listener
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        from wps_sam_ros import topics
        from wps_sam_ros.dds import DdsBackend, dds_qos, dds_topic, idl_type
        from wps_sam_ros.messages import MessageFactory

        self.participant = DomainParticipant(domain_id)
        self.writer = DataWriter(self.participant, Topic(self.participant, dds_topic("/camera/image_raw"),
                                                         idl_type(topics.RAW_IMAGE_TYPE)),
                                 qos=dds_qos(topics.SENSOR_DATA_QOS))
        self.arrivals: list[tuple[int, int]] = []
        self.lock = threading.Lock()
        masks = topics.OUTPUT_TOPICS["masks"]
        self.masks = DataReader(self.participant, Topic(self.participant, dds_topic(masks.name), idl_type(masks.msg_type)),
                                qos=dds_qos(topics.QosSpec("reliable", masks.qos.durability, 50)),
                                listener=Listener(on_data_available=self._on_masks))
        diag = topics.OUTPUT_TOPICS["diagnostics"]
        self.diagnostics = DataReader(self.participant, Topic(self.participant, dds_topic(diag.name),
                                                              idl_type(diag.msg_type)),
                                      qos=dds_qos(topics.QosSpec("reliable", diag.qos.durability, 10)))
        self.factory = MessageFactory(DdsBackend())

    def _on_masks(self, reader) -> None:
        now = time.time_ns()
        samples = reader.take(N=50)
        with self.lock:
            self.arrivals += [(now, s.header.stamp.sec * 10**9 + s.header.stamp.nanosec) for s in samples]

    def wait_matched(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.writer.get_matched_subscriptions() and self.masks.get_matched_publications():
                return
            time.sleep(0.05)
        raise RuntimeError("the node did not appear on DDS (loopback discovery failed)")

    def publish(self, image: np.ndarray) -> int:
        stamp = time.time_ns()
        self.writer.write(self.factory.image(self.factory.header(stamp, "camera"), image, "rgb8"))
        return stamp

    def answered(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def last_diagnostics(self) -> dict[str, str]:
        samples = self.diagnostics.take(N=100)
        return {kv.key: kv.value for kv in samples[-1].status[0].values} if samples else {}


def frames(h: int, w: int, count: int = 4) -> list[np.ndarray]:
    out = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        image[h // 4 + 10 * seed: h // 2, w // 5: w // 2] = (200, 40, 40)
        out.append(image)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--warmup", type=int, default=200, help="frames before the RSS baseline")
    ap.add_argument("--score-threshold", type=float, default=0.0)
    ap.add_argument("--node-threads", type=int, default=1, help="OMP/torch threads of the node process")
    args = ap.parse_args()
    from wps_sam_ros.dds import LOOPBACK_CONFIG
    from cyclonedds.domain import Domain
    from node_process import NodeProcess  # test/node_process.py (common.py puts test/ on sys.path)

    info = machine()
    domain_id = 150 + os.getpid() % 50
    os.environ["CYCLONEDDS_URI"] = LOOPBACK_CONFIG
    with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp:
        sam_path, prompter_path = tiny_model_files(Path(tmp))
        node = NodeProcess({"prompter_checkpoint": prompter_path, "sam_checkpoint": sam_path, "device": "cpu",
                            "score_threshold": args.score_threshold, "diagnostics_period": 0.5},
                           domain_id, threads=args.node_threads).start()
        domain = Domain(domain_id, LOOPBACK_CONFIG)  # keeps the loopback config for our participant
        try:
            camera = Camera(domain_id)
            camera.wait_matched()
            images = frames(args.height, args.width)
            sent: list[int] = []
            rss_samples: list[tuple[int, int]] = []
            start = time.monotonic()
            for i in range(args.frames):
                sent.append(camera.publish(images[i % len(images)]))
                if (i + 1) % 100 == 0 or i + 1 == args.warmup:
                    rss_samples.append((i + 1, rss_kib(node.pid)))
                time.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
            send_s = time.monotonic() - start
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sent[-1] not in {s for _, s in list(camera.arrivals)}:
                time.sleep(0.05)
            time.sleep(1.2)  # two diagnostics periods: the final counts
            diag = camera.last_diagnostics()
            rss_end = rss_kib(node.pid)
        finally:
            node.stop(timeout=15)
            del domain
    with camera.lock:
        arrivals = sorted(camera.arrivals)
    sent_set = set(sent)
    latencies = np.array([(a - s) / 1e6 for a, s in arrivals if s in sent_set])
    gaps = np.diff([a for a, _ in arrivals]) / 1e6
    period = float(statistics.median(gaps)) if len(gaps) else float("nan")
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95))
    baseline = next(kib for i, kib in rss_samples if i >= args.warmup)
    growth = 100.0 * (rss_end - baseline) / baseline
    processed_fps = (len(arrivals) - 1) / ((arrivals[-1][0] - arrivals[0][0]) / 1e9) if len(arrivals) > 1 else 0.0
    emit({
        "benchmark": "P3_node", "transport": "cyclonedds loopback", "model": "tiny (random weights)",
        "image_hw": [args.height, args.width], "rate_hz": args.rate, "frames_sent": len(sent),
        "send_rate_hz": round(len(sent) / send_s, 2), "node_threads": args.node_threads, **info,
        "latency_ms": {"p50": round(p50, 1), "p95": round(p95, 1), "max": round(float(latencies.max()), 1)},
        "processing_period_ms": round(period, 1), "processed_fps": round(processed_fps, 2),
        "node_inference_ms_mean": diag.get("inference_ms_mean"),
        "p95_in_periods": round(p95 / period, 2), "meets_latency_target": p95 <= TARGET_P95_PERIODS * period,
        "frames": {"received_by_node": int(diag.get("frames_received", -1)),
                   "processed": int(diag.get("frames_processed", -1)),
                   "dropped_latest_frame_slot": int(diag.get("frames_dropped", -1)),
                   "rejected": int(diag.get("frames_rejected", -1)), "answered": len(latencies),
                   "unanswered": len(sent) - len(latencies)},
        "rss_mib": {"after_warmup": round(baseline / 1024, 1), "end": round(rss_end / 1024, 1),
                    "series": [[i, round(k / 1024, 1)] for i, k in rss_samples]},
        "rss_growth_pct": round(growth, 2), "meets_rss_target": growth < MAX_RSS_GROWTH_PCT,
    })


if __name__ == "__main__":
    main()
