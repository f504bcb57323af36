"""The node's 3D step, middleware-free like core.py: one frame's parts + its depth image + the latest CameraInfo ->
detections_3d (+ points while someone subscribes), with the counts /diagnostics shows.

A 3D problem (no CameraInfo yet, a depth of another size or encoding, a bad K) is counted with its reason and
warned about, and the frame's 2D outputs still go out: a robot that loses depth keeps its label maps.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Callable

from wps_sam_core.errors import WpsSamError

from . import topics
from .conversions import depth_for_image
from .messages import WARN, MessageFactory


def depth_options(params: dict[str, Any]) -> dict[str, Any]:
    """PartSegCore's 3D keyword arguments from node parameters; none without a depth_topic (2D only)."""
    if not params["depth_topic"]:
        return {}
    info_topic = topics.camera_info_topic(params["depth_topic"], params["camera_info_topic"])
    return {"depth_inputs": (params["depth_topic"], info_topic),
            "depth_scale_to_image": bool(params["depth_scale_to_image"]),
            "publish_points": bool(params["publish_points"])}


@dataclass
class DepthStats:
    """Parts in 3D: frames lifted, frames whose 3D was refused (2D still went out) and why, parts without depth."""

    frames_3d: int = 0
    rejected_3d: int = 0
    parts_without_depth: int = 0
    camera_info_seen: bool = False
    last_problem: str = ""
    last_was_rejected: bool = False

    def values(self) -> dict[str, str]:
        return {"frames_3d": str(self.frames_3d), "frames_3d_rejected": str(self.rejected_3d),
                "parts_without_depth": str(self.parts_without_depth),
                "camera_info": "received" if self.camera_info_seen else "waiting"}


class PartLifter:
    """Lifts each frame's parts to 3D for one (depth topic, CameraInfo topic) pair; thread-safe statistics."""

    def __init__(self, factory: MessageFactory, depth_inputs: tuple[str, str], warn: Callable[[str], Any], *,
                 depth_scale_to_image: bool = False, publish_points: bool = True,
                 points_wanted: Callable[[], bool] = lambda: True) -> None:
        """warn: a throttled warning of its own, so 3D problems never hide 2D ones."""
        self.factory = factory
        self.depth_inputs = depth_inputs
        self.warn = warn
        self.depth_scale_to_image = depth_scale_to_image
        self.publish_points = publish_points  # run-time parameter
        self.points_wanted = points_wanted  # the transport: does anyone subscribe to parts/points?
        self._stats = DepthStats()
        self._lock = threading.Lock()

    @property
    def stats(self) -> DepthStats:
        """A consistent copy of the statistics."""
        with self._lock:
            return dataclasses.replace(self._stats)

    def outputs(self, header: Any, seg: Any, depth: Any, camera_info: Any) -> dict[str, Any]:
        """detections_3d (+ points while wanted) of one frame; a problem is counted with its reason, and {}."""
        from wps_sam_core.postprocess.geometry3d import lift_to_3d, part_points  # numpy only, but not needed in 2D

        try:
            if camera_info is None:
                raise WpsSamError(f"no CameraInfo received yet on {self.depth_inputs[1]}")
            if depth is None:
                raise WpsSamError(f"no depth image paired with the frame ({self.depth_inputs[0]})")
            depth_m, intrinsics = depth_for_image(depth, camera_info, seg.labels.shape, self.depth_scale_to_image)
            lifted = lift_to_3d(seg, depth_m, intrinsics)
            points = (part_points(seg, depth_m, intrinsics)  # class colours: RViz shows the parts
                      if self.publish_points and self.points_wanted() else None)
        except WpsSamError as exc:
            with self._lock:
                self._stats.rejected_3d += 1
                self._stats.camera_info_seen |= camera_info is not None
                self._stats.last_problem, self._stats.last_was_rejected = str(exc), True
            self.warn(f"no 3D for frame: {exc}")
            return {}
        with self._lock:
            self._stats.frames_3d += 1
            self._stats.parts_without_depth += len(lifted.no_depth)
            self._stats.camera_info_seen, self._stats.last_was_rejected = True, False
        return self.factory.part_messages_3d(header, lifted, points)

    def diagnose(self, values: dict[str, str], level: int, message: str) -> tuple[int, str]:
        """Adds the 3D keys to /diagnostics `values`; WARN while 3D waits for CameraInfo or the last frame had none."""
        stats = self.stats
        values.update(depth_topic=self.depth_inputs[0], camera_info_topic=self.depth_inputs[1], **stats.values())
        if stats.last_was_rejected:
            waiting = "3D waiting for CameraInfo" if not stats.camera_info_seen else "no 3D for last frame"
            return max(level, WARN), f"{message}; {waiting}: {stats.last_problem}"
        return level, message
