"""Soak: `part_seg_node --transport dds` (tiny model) fed thousands of small frames, some of them broken -> one JSON line.

The node runs as its own process on Cyclone DDS loopback; this script is the camera. It sends `--frames`
sensor_msgs/Image at `--rate-hz` (best effort, like a camera driver), a `--bad-fraction` of them broken in
random ways (wrong step, short data, 32FC1 with NaN/inf, unknown encoding, no pixels, 20000x10 px). The last
frame is always good. It reports:
  unhandled_exceptions  tracebacks / "frame failed" / thread deaths in the node's output (must be 0)
  rss growth            node RSS at the end vs after warm-up (10% of the frames), from /proc (must be < 5%)
  accounting            the node's /diagnostics counters once settled: received == processed + dropped +
                        rejected (core.FrameStats), received <= sent, rejected <= bad sent, processed <= good
                        sent, and every answered stamp is a good frame's
Run: python3 benchmarks/soak_dds.py [--frames 5000 --rate-hz 200]. The test suite runs a 300-frame version.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from wps_sam_ros import topics  # noqa: E402
from wps_sam_ros.dds import LOOPBACK_CONFIG, DdsBackend, dds_qos, dds_topic, idl_type  # noqa: E402
from wps_sam_ros.messages import MessageFactory  # noqa: E402

from common import tiny_model_files  # noqa: E402  (benchmarks/ is the script's folder; puts test/ on sys.path)
from node_process import NodeProcess  # noqa: E402  (test/node_process.py)

FAILURE_MARKERS = ("Traceback (most recent call last)", "frame failed", "Exception in thread")
RSS_LIMIT_PCT = 5.0


class BadFrames:
    """Broken sensor_msgs/Image in the ways a driver or a bag can produce them."""

    def __init__(self, factory: MessageFactory, rng: np.random.Generator) -> None:
        self.factory, self.rng = factory, rng
        self.kinds = {"wrong_step": self.wrong_step, "short_data": self.short_data, "float_nan": self.float_nan,
                      "unknown_encoding": self.unknown_encoding, "no_pixels": self.no_pixels,
                      "elongated": self.elongated}

    def make(self, header, good_pixels: np.ndarray) -> tuple[str, object]:
        kind = str(self.rng.choice(list(self.kinds)))
        return kind, self.kinds[kind](header, good_pixels)

    def wrong_step(self, header, pixels):
        msg = self.factory.image(header, pixels, "rgb8")
        msg.step = int(self.rng.integers(1, msg.step))
        return msg

    def short_data(self, header, pixels):
        msg = self.factory.image(header, pixels, "rgb8")
        msg.data = bytes(msg.data)[: int(self.rng.integers(0, len(msg.data)))]
        return msg

    def float_nan(self, header, pixels):
        msg = self.factory.image(header, pixels[:, :, 0], "mono8")
        values = self.rng.choice([np.nan, np.inf, -np.inf, 0.5], size=(msg.height, msg.width)).astype(np.float32)
        msg.encoding, msg.step, msg.data = "32FC1", msg.width * 4, values.tobytes()
        return msg

    def unknown_encoding(self, header, pixels):
        msg = self.factory.image(header, pixels, "rgb8")
        msg.encoding = str(self.rng.choice(["yuv422", "bayer_rggb8", "16UC1", "", "RGB8"]))
        return msg

    def no_pixels(self, header, pixels):
        msg = self.factory.image(header, pixels, "rgb8")
        msg.height, msg.data = 0, b""
        return msg

    def elongated(self, header, pixels):
        return self.factory.image(header, np.zeros((10, 20000), np.uint8), "mono8")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def run_soak(model_files: tuple[Path, Path], frames: int = 5000, rate_hz: float = 200.0, bad_fraction: float = 0.2,
             seed: int = 0, height: int = 24, width: int = 32, domain_id: int | None = None) -> dict:
    from cyclonedds.domain import Domain, DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    sam_path, prompter_path = model_files
    domain_id = 220 + os.getpid() % 12 if domain_id is None else domain_id  # test_ros_dds uses 100..219
    node = NodeProcess({"prompter_checkpoint": prompter_path, "sam_checkpoint": sam_path, "device": "cpu",
                        "score_threshold": 0.0, "diagnostics_period": 0.25, "publish_overlay": False},
                       domain_id, threads=1)
    domain = Domain(domain_id, LOOPBACK_CONFIG)  # this process's participant on loopback too
    rng = np.random.default_rng(seed)
    factory = MessageFactory(DdsBackend())
    result: dict = {}
    try:
        node.start(timeout=120)
        participant = DomainParticipant(domain_id)
        writer = DataWriter(participant, Topic(participant, dds_topic("/camera/image_raw"),
                                               idl_type(topics.RAW_IMAGE_TYPE)), qos=dds_qos(topics.SENSOR_DATA_QOS))
        readers = {}
        for key in ("masks", "diagnostics"):
            spec = topics.OUTPUT_TOPICS[key]
            readers[key] = DataReader(participant, Topic(participant, dds_topic(spec.name), idl_type(spec.msg_type)),
                                      qos=dds_qos(topics.QosSpec("reliable", "volatile", 1000)))
        answered: set[int] = set()
        diagnostics: list[dict[str, str]] = []

        def poll() -> None:
            answered.update(stamp_of(m) for m in readers["masks"].take(N=1000))
            diagnostics.extend({kv.key: kv.value for kv in d.status[0].values} for d in readers["diagnostics"].take(N=100))

        deadline = time.monotonic() + 60
        while not (writer.get_matched_subscriptions() and all(r.get_matched_publications() for r in readers.values())):
            if time.monotonic() > deadline:
                raise RuntimeError("node did not appear on DDS")
            time.sleep(0.05)

        pool = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(4)]
        bad = BadFrames(factory, rng)
        good_stamps: list[int] = []
        bad_kinds: dict[str, int] = {}
        rss_samples: list[tuple[int, float]] = []
        warm_at = max(1, frames // 10)
        start = time.monotonic()
        for i in range(frames):
            header = factory.header(time.time_ns(), "cam")
            if i < frames - 1 and rng.random() < bad_fraction:
                kind, msg = bad.make(header, pool[i % 4])
                bad_kinds[kind] = bad_kinds.get(kind, 0) + 1
            else:
                msg = factory.image(header, pool[i % 4], "rgb8")
                good_stamps.append(stamp_of(msg))
            writer.write(msg)
            if i % 50 == 0:
                poll()
            if i >= warm_at and (i - warm_at) % max(1, frames // 20) == 0:
                rss_samples.append((i, rss_mb(node.pid)))
            time.sleep(max(0.0, start + (i + 1) / rate_hz - time.monotonic()))
        send_s = time.monotonic() - start

        def settled() -> bool:
            if len(diagnostics) < 2:
                return False
            last, before = diagnostics[-1], diagnostics[-2]
            counts = [int(last[k]) for k in ("frames_received", "frames_processed", "frames_dropped", "frames_rejected")]
            return counts[0] == sum(counts[1:]) and last["frames_received"] == before["frames_received"] \
                and good_stamps[-1] in answered

        deadline = time.monotonic() + 60
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.1)
            poll()
        rss_end = rss_mb(node.pid)
        values = diagnostics[-1] if diagnostics else {}
        received, processed, dropped, rejected = (int(values.get(k, -1)) for k in (
            "frames_received", "frames_processed", "frames_dropped", "frames_rejected"))
        bad_sent = sum(bad_kinds.values())
        rss_warm = rss_samples[0][1] if rss_samples else rss_end
        result = {
            "benchmark": "soak_dds", "frames_sent": frames, "rate_hz": rate_hz, "send_s": round(send_s, 2),
            "image": [height, width], "bad_sent": bad_sent, "bad_kinds": bad_kinds,
            "received": received, "processed": processed, "dropped": dropped, "rejected": rejected,
            "answered": len(answered), "lost_in_transport": frames - received,
            "accounting_ok": bool(received == processed + dropped + rejected and 0 < received <= frames
                                  and rejected <= bad_sent and processed <= frames - bad_sent
                                  and answered <= set(good_stamps) and len(answered) <= processed),
            "last_good_frame_answered": good_stamps[-1] in answered,
            "inference_ms_mean": values.get("inference_ms_mean"),
            "rss_warm_mb": round(rss_warm, 1), "rss_end_mb": round(rss_end, 1),
            "rss_max_mb": round(max([rss_end, *(r for _, r in rss_samples)]), 1),
            "rss_growth_pct": round(100 * (rss_end - rss_warm) / rss_warm, 2),
        }
    finally:
        node.stop(timeout=30)
        del domain
    text = node.log
    result.update(node_exit_code=node.returncode,
                  unhandled_exceptions=sum(text.count(marker) for marker in FAILURE_MARKERS),
                  node_warnings=sum("rejected frame" in line for line in text.splitlines()), node_log_tail=text[-2000:])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--rate-hz", type=float, default=200.0)
    ap.add_argument("--bad-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = run_soak(tiny_model_files(Path(folder)), args.frames, args.rate_hz, args.bad_fraction, args.seed)
    result["rss_ok"] = result["rss_growth_pct"] < RSS_LIMIT_PCT
    result["ok"] = bool(result["rss_ok"] and result["accounting_ok"] and result["unhandled_exceptions"] == 0
                        and result["node_exit_code"] == 0)
    result["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps({k: v for k, v in result.items() if k != "node_log_tail"}, separators=(",", ":")), flush=True)
    if not result["ok"]:
        print(result["node_log_tail"], file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
