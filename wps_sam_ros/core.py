"""Middleware-free node logic: latest-frame slot, one worker thread, statistics, parameters.

Transports (rclpy node, Cyclone DDS, offline bags) feed messages in with `submit` (live) or
`process` (offline) and get messages out through the `publish(key, msg)` callable they provide;
keys are topics.OUTPUT_TOPICS keys.

Why a one-frame slot and not a queue: a queue in front of a model slower than the camera grows
without bound and every output becomes stale. Here a newer frame replaces an unprocessed one (counted
as dropped), so the delay of any output is at most one inference plus the wait for the frame in flight.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from wps_sam_core.errors import WpsSamError
from wps_sam_core.postprocess.tracking import RESET_BY_CALLER, PartTracker, TrackerSettings, with_track_ids
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings, load_segmenter as core_load_segmenter

from . import topics
from .conversions import message_to_rgb
from .messages import OK, WARN, MessageFactory
from .params import check, check_all
from .parts_3d import PartLifter
from .sync import stamp_ns

log = logging.getLogger(__name__)
# node parameter -> TrackerSettings field
TRACKER_PARAMETERS = {"track_match_iou": "match_iou", "track_max_age": "track_max_age",
                      "track_min_hits": "track_min_hits", "track_reset_s": "track_reset_s"}
_SETTINGS_PARAMETERS = ("score_threshold", "mask_threshold", "max_instances", "class_filter", "overlap", "dedup_iou")


# ---- building the segmenter from node parameters -------------------------------------------------
def settings_from_parameters(params: dict[str, Any]) -> SegmenterSettings:
    return SegmenterSettings(
        score_threshold=float(params["score_threshold"]), mask_threshold=float(params["mask_threshold"]),
        max_instances=int(params["max_instances"]), class_filter=topics.parse_class_filter(params["class_filter"]),
        overlap=str(params["overlap"]), dedup_iou=float(params["dedup_iou"]),
    )


def tracker_settings_from_parameters(params: dict[str, Any]) -> TrackerSettings:
    return TrackerSettings(**{field: params[name] for name, field in TRACKER_PARAMETERS.items()})


def load_segmenter(params: dict[str, Any]) -> PartSegmenter:
    """The segmenter the node parameters name (checked first; the rule is the core's load_segmenter):
    prompter_checkpoint empty = the embedded default model; otherwise the prompter on the SAM of
    sam_checkpoint (a file, or "random"; empty is refused naming the parameter). A SAM other than the one the
    prompter was trained on is refused: the node offers no override."""
    check_all(params)
    return core_load_segmenter(params["prompter_checkpoint"], params["sam_type"], params["sam_checkpoint"],
                               params["device"], params["precision"], settings_from_parameters(params),
                               sam_flag="sam_checkpoint", mismatch_flag="", backend=params["backend"],
                               onnx_dir=params["onnx_dir"], onnx_providers=params["onnx_providers"],
                               onnx_threads=params["onnx_threads"])


# ---- the pieces ------------------------------------------------------------------------------------
class LatestFrameSlot:
    """Holds at most one item; `put` replaces an unprocessed item and reports it as dropped."""

    def __init__(self) -> None:
        self._item: Any = None
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any) -> bool:
        with self._cond:
            dropped = self._item is not None
            self._item = item
            self._cond.notify()
            return dropped

    def take(self, timeout: float) -> Any:
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class ThrottledWarning:
    """At most one warning per `period_s`; the next one says how many were suppressed."""

    def __init__(self, warn: Callable[[str], None], period_s: float = 5.0) -> None:
        self.warn, self.period_s = warn, period_s
        self._last = -float("inf")
        self._suppressed = 0

    def __call__(self, message: str) -> bool:
        now = time.monotonic()
        if now - self._last < self.period_s:
            self._suppressed += 1
            return False
        extra = f" ({self._suppressed} similar warnings suppressed)" if self._suppressed else ""
        self.warn(message + extra)
        self._last, self._suppressed = now, 0
        return True


@dataclass
class FrameStats:
    window: int = 30
    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    last_problem: str = ""
    last_was_rejected: bool = False
    inference_ms: deque = field(default_factory=deque)
    latency_ms: deque = field(default_factory=deque)
    done_at: deque = field(default_factory=deque)  # monotonic seconds of finished frames

    def add(self, inference_ms: float, latency_ms: float | None) -> None:
        """latency_ms None: unknown (no clock yet, or an unstamped frame); it stays out of the statistics."""
        self.processed += 1
        pairs = [(self.inference_ms, inference_ms), (self.done_at, time.monotonic())]
        if latency_ms is not None:
            pairs.append((self.latency_ms, latency_ms))
        for values, value in pairs:
            values.append(value)
            if len(values) > self.window:
                values.popleft()

    def fps(self) -> float:
        if len(self.done_at) < 2 or self.done_at[-1] <= self.done_at[0]:
            return 0.0
        return (len(self.done_at) - 1) / (self.done_at[-1] - self.done_at[0])

    def values(self) -> dict[str, str]:
        def stat(values, fn):
            return f"{fn(values):.1f}" if values else "n/a"
        return {
            "inference_ms_mean": stat(self.inference_ms, np.mean),
            "inference_ms_max": stat(self.inference_ms, max),
            "inference_ms_last": stat(self.inference_ms, lambda v: v[-1]),
            "latency_ms_mean": stat(self.latency_ms, np.mean),
            "latency_ms_max": stat(self.latency_ms, max),
            "latency_ms_last": stat(self.latency_ms, lambda v: v[-1]),
            "fps": f"{self.fps():.2f}",
            "frames_received": str(self.received),
            "frames_processed": str(self.processed),
            "frames_dropped": str(self.dropped),
            "frames_rejected": str(self.rejected),
        }


def frame_latency_ms(now_ns: int, header: Any) -> float | None:
    """now - header.stamp on the node's clock (sim time under use_sim_time); None while either is unset (0):
    a node waiting for /clock, or a camera that does not stamp, has no measurable latency."""
    stamp = stamp_ns(header)
    return (now_ns - stamp) / 1e6 if now_ns > 0 and stamp > 0 else None


# ---- the core --------------------------------------------------------------------------------------
class PartSegCore:
    def __init__(
        self,
        segmenter: PartSegmenter,
        factory: MessageFactory,
        publish: Callable[[str, Any], None],
        *,
        overlay_wanted: Callable[[], bool] = lambda: True,
        publish_overlay: bool = True,
        now_ns: Callable[[], int] = time.time_ns,
        warn: Callable[[str], None] = log.warning,
        name: str = topics.NODE_NAME,
        tracking: bool = False,
        tracker_settings: TrackerSettings | None = None,
        tracker: PartTracker | None = None,
        depth_inputs: tuple[str, str] | None = None,
        depth_scale_to_image: bool = False,
        publish_points: bool = True,
        points_wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        """tracking: instance ids become track ids, by one PartTracker for the one image stream this core serves:
        `tracker` (a transport that outlives its cores keeps one, so ids are not reused) or a new one; with
        `tracker_settings` when given. depth_inputs: (depth topic, CameraInfo topic) to lift parts to 3D
        (parts_3d.PartLifter; frames come with their depth and the latest CameraInfo); None = 2D only."""
        self.segmenter = segmenter
        self.factory = factory
        self.publish = publish
        self.overlay_wanted = overlay_wanted
        self.publish_overlay = publish_overlay
        self.now_ns = now_ns
        self.name = name
        self.stats = FrameStats()
        self._stats_lock = threading.Lock()
        self._warn_rejected = ThrottledWarning(warn)
        self._slot = LatestFrameSlot()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.tracker = PartTracker(tracker_settings) if tracker is None else tracker
        if tracker is not None and tracker_settings is not None:
            tracker.settings = tracker_settings
        self.tracking = bool(tracking)
        self._tracking_lock = threading.Lock()
        self._tracker_used = False  # a frame went through the tracker since tracking was last switched on
        self.depth_inputs = depth_inputs
        self.lifter = None if depth_inputs is None else PartLifter(
            factory, depth_inputs, ThrottledWarning(warn), depth_scale_to_image=depth_scale_to_image,
            publish_points=publish_points, points_wanted=points_wanted)

    # -- live path
    def start(self) -> None:
        if self._worker is not None:
            return
        self._stop.clear()
        self._slot = LatestFrameSlot()
        self._worker = threading.Thread(target=self._run, name=f"{self.name}-worker", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None

    @property
    def running(self) -> bool:
        return self._worker is not None

    def submit(self, msg: Any, depth: Any = None, camera_info: Any = None) -> None:
        """Called from the transport's receive callback: O(1), never blocks on the model. With depth_inputs: a
        synchronised image + depth pair and the latest CameraInfo (or None), replacing an unprocessed one."""
        dropped = self._slot.put((msg, depth, camera_info))
        with self._stats_lock:
            self.stats.received += 1
            self.stats.dropped += int(dropped)

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._slot.take(timeout=0.1)
            if item is None:
                continue
            try:
                outputs = self.process(*item)
            except Exception as exc:  # a bug or a device error must not kill the worker silently
                self._reject(f"frame failed: {type(exc).__name__}: {exc}")  # counted: the frame totals add up
                continue
            try:
                for key, out in (outputs or {}).items():
                    self.publish(key, out)
            except Exception as exc:  # a transport error must not end the worker either
                self._warn_rejected(f"publishing failed: {type(exc).__name__}: {exc}")

    # -- one frame, synchronously (the live worker and the bag tool both use this)
    def process(self, msg: Any, depth: Any = None, camera_info: Any = None) -> dict[str, Any] | None:
        """Image/CompressedImage (+ depth Image and CameraInfo with depth_inputs) -> output messages; a bad frame is
        counted, warned about, and None; a frame whose 3D cannot be computed still gets its 2D outputs."""
        try:
            rgb = message_to_rgb(msg)
        except WpsSamError as exc:
            self._reject(str(exc))
            return None
        started = time.perf_counter()
        try:
            seg = self.segmenter.segment(rgb)
        except WpsSamError as exc:  # a decodable frame the model cannot take, e.g. 20000x10 px
            self._reject(str(exc))
            return None
        inference_ms = (time.perf_counter() - started) * 1e3
        with self._tracking_lock:
            tracking = self.tracking
            self._tracker_used |= tracking
        if tracking:  # instance ids -> track ids; the label map stays as it is
            seg = with_track_ids(seg, self.tracker.update(seg.instances, stamp_ns(msg.header)))
        overlay = None
        if self.publish_overlay and self.overlay_wanted():
            from wps_sam_core.viz import overlay as draw_overlay  # cv2 drawing: only when someone looks

            overlay = draw_overlay(rgb, seg.labels, seg.instance_ids, seg.class_names)
        outputs = self.factory.part_messages(msg.header, seg, overlay)
        if self.lifter is not None:
            outputs.update(self.lifter.outputs(msg.header, seg, depth, camera_info))
        with self._stats_lock:
            self.stats.add(inference_ms, frame_latency_ms(self.now_ns(), msg.header))
            self.stats.last_was_rejected = False
        return outputs

    def _reject(self, problem: str) -> None:
        with self._stats_lock:
            self.stats.rejected += 1
            self.stats.last_problem = problem
            self.stats.last_was_rejected = True
        self._warn_rejected(f"rejected frame: {problem}")

    # -- latched and periodic messages
    def label_info_message(self, header: Any = None) -> Any:
        """LabelInfo stamped now, or with a copy of `header` (the bag tool: the first image's)."""
        header = self.factory.header(self.now_ns()) if header is None else self.factory.copy_header(header)
        return self.factory.label_info(header, self.segmenter.class_names, self.segmenter.settings.score_threshold)

    def diagnostics_message(self) -> Any:
        with self._stats_lock:
            values = self.stats.values()
            rejected_last, problem = self.stats.last_was_rejected, self.stats.last_problem
        values.update(device=str(self.segmenter.device), precision=self.segmenter.precision,
                      model=self.segmenter.description or "n/a", backend=self.segmenter.backend,
                      provider=self.segmenter.runner.provider)
        if rejected_last:
            level, message = WARN, f"last frame rejected: {problem}"
        elif values["frames_processed"] == "0":
            level, message = OK, "waiting for images" if self.depth_inputs is None else "waiting for image + depth pairs"
        else:
            level, message = OK, "segmenting"
        if self.lifter is not None:
            level, message = self.lifter.diagnose(values, level, message)
        values["tracking"] = "on" if self.tracking else "off"
        if self.tracking:
            values.update({key if key.startswith("tracks_") else f"tracker_{key}": value
                           for key, value in self.tracker.diagnostics().items()})
        if self.segmenter.caveat:  # the demo model: say so wherever a user looks, not only at start
            values["model_caveat"] = self.segmenter.caveat
            level, message = max(level, WARN), f"{message}; {self.segmenter.caveat.split(':')[0]}"
        status = (level, f"{self.name}: part segmentation", message, str(self.segmenter.device), values)
        return self.factory.diagnostics(self.factory.header(self.now_ns()), [status])

    # -- run-time parameters
    def set_parameters(self, changes: dict[str, Any]) -> tuple[bool, str]:
        """Apply run-time parameter changes all-or-nothing; (ok, reason) for the set-parameters reply."""
        fixed = sorted(set(changes) - set(topics.RUNTIME_PARAMETERS))
        if fixed:
            return False, f"{', '.join(fixed)} cannot change while running; reconfigure or restart the node"
        settings = {k: v for k, v in changes.items() if k in _SETTINGS_PARAMETERS}
        if "class_filter" in settings:
            settings["class_filter"] = topics.parse_class_filter(settings["class_filter"])
        tracker_changes = {TRACKER_PARAMETERS[k]: v for k, v in changes.items() if k in TRACKER_PARAMETERS}
        try:
            for name in ("tracking", *TRACKER_PARAMETERS):  # types and bounds, as the transports check them
                if name in changes:
                    check(name, changes[name])
            tracker_settings = dataclasses.replace(self.tracker.settings, **tracker_changes)  # validated
            if settings:
                self.segmenter.update_settings(**settings)
        except (WpsSamError, TypeError, ValueError) as exc:
            return False, str(exc)
        if tracker_changes:
            self.tracker.settings = tracker_settings  # live tracks are kept
        if "tracking" in changes:
            self._switch_tracking(bool(changes["tracking"]))
        if "publish_overlay" in changes:
            self.publish_overlay = bool(changes["publish_overlay"])
        if "publish_points" in changes and self.lifter is not None:
            self.lifter.publish_points = bool(changes["publish_points"])
        if "score_threshold" in settings:
            self.publish("label_info", self.label_info_message())  # LabelInfo carries the threshold
        return True, ""

    def _switch_tracking(self, on: bool) -> None:
        """Switching on starts from no tracks: tracks left from before it was switched off are stale (a reset
        counted as 'reset by caller'); ids are never reused, so a consumer cannot confuse old and new parts."""
        with self._tracking_lock:
            if on and not self.tracking and self._tracker_used:
                self.tracker.reset(RESET_BY_CALLER, "tracking switched on again: tracks from before are dropped")
                self._tracker_used = False
            self.tracking = on
