"""Approximate time synchronisation without ROS: the policy of message_filters.ApproximateTimeSynchronizer.

The rclpy node pairs colour and depth images with the real `message_filters.ApproximateTimeSynchronizer`; the
DDS transport and the bag tool have no rclpy, so they use `ApproximateTimeSync`, a re-implementation of the
*Python* message_filters class (ros2/message_filters, src/message_filters/__init__.py, identical on Humble,
Jazzy and Rolling; the C++ ApproximateTime policy is a different algorithm). test_sync.py feeds the same
stamp sequences to both and checks they pair identically. The policy, per arriving message:

  1. it goes into its input's queue, keyed by header stamp (a second message with the same stamp replaces the
     first); a queue holding more than `queue_size` stamps drops its oldest;
  2. from every *other* queue, the stamps within `slop` of the new one (|delta| <= slop) are candidates,
     nearest first; an input without a candidate means no set yet;
  3. the combinations of candidates are tried in itertools.product order, and the first whose stamps spread
     (max - min) *strictly less* than `slop` is emitted and its messages leave the queues.

Differences from message_filters: no `allow_headerless` (every message here has a header); slop is given in
seconds and converted like rclpy's Duration(seconds=...) (int(slop * 1e9) ns); messages that leave a queue
unpaired are counted (`unpaired`), which message_filters does not do; and a stream that starts over (a stamp more
than RESTART_S older than the newest of its input: `ros2 bag play --loop`, a restarted driver, a reset simulation)
clears the queues first (StampJumpGuard). Bare message_filters stalls there: a queue full of unpaired stamps from
before the jump drops every new, older message on arrival until the stamps catch up (a loop's length). The rclpy
node puts the same guard in front of message_filters (clear_on_restart), so both paths still pair alike.

CameraInfo is not synchronised (DepthFrameSync): its K does not change while the camera runs, drivers stamp it
differently (RealSense and ZED like their image, others from a calibration file), and a
best-effort CameraInfo lost on the way would otherwise drop a colour + depth pair that is perfectly usable.
"""
from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)
RESTART_S = 1.0  # a stamp this much older than the newest of its input: the stream started over (not reordering)


def stamp_ns(header: Any) -> int:
    """header.stamp in nanoseconds (rclpy's Time.from_msg(stamp).nanoseconds)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class StampJumpGuard:
    """Per input, the newest stamp seen; `restarted(index, stamp)` is True when a stamp is more than `restart_s`
    older than it. Then every input starts afresh, so the other inputs' first messages after the jump (older than
    their own newest too) do not count as a second restart."""

    def __init__(self, n_inputs: int, restart_s: float = RESTART_S) -> None:
        self._newest: list[int | None] = [None] * n_inputs
        self._restart_ns = int(restart_s * 1e9)

    def restarted(self, index: int, stamp: int) -> bool:
        newest = self._newest[index]
        if newest is not None and stamp < newest - self._restart_ns:
            self._newest = [None] * len(self._newest)
            self._newest[index] = stamp
            return True
        self._newest[index] = stamp if newest is None else max(newest, stamp)
        return False


def clear_on_restart(filters: Sequence[Any], synchronizer: Callable[[], Any],
                     on_restart: Callable[[], None] = lambda: None) -> StampJumpGuard:
    """The StampJumpGuard in front of a message_filters synchronizer (the rclpy node): registered on its input
    filters BEFORE the synchronizer is built, so it runs before the synchronizer adds each message; on a restart it
    clears `synchronizer()`'s queues under its lock (message_filters' TimeSynchronizer keeps `queues` and `lock`,
    Humble and Jazzy alike) and calls `on_restart`."""
    guard = StampJumpGuard(len(filters))

    def check(msg: Any, index: int) -> None:
        sync = synchronizer()
        if guard.restarted(index, stamp_ns(msg.header)) and sync is not None:
            with sync.lock:
                for queue in sync.queues:
                    queue.clear()
            on_restart()

    for index, input_filter in enumerate(filters):
        input_filter.registerCallback(check, index)
    return guard


class ApproximateTimeSync:
    """N inputs (2 or 3 in this package), `add(index, msg)`; `callback(*msgs)` per synchronised set, in input
    order, called with the lock held (keep it short: the node's callback is a latest-frame slot put)."""

    def __init__(self, n_inputs: int, queue_size: int, slop_s: float, callback: Callable[..., None]) -> None:
        if n_inputs < 2:
            raise ValueError(f"synchronising needs at least 2 inputs, got {n_inputs}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.queue_size = int(queue_size)
        self.slop_ns = int(float(slop_s) * 1e9)  # = rclpy.duration.Duration(seconds=slop_s).nanoseconds
        self.callback = callback
        self.queues: list[dict[int, Any]] = [{} for _ in range(n_inputs)]
        self.unpaired = [0] * n_inputs  # messages dropped from a queue (its oldest) without a set
        self.emitted = 0
        self.restarts = 0  # streams that started over (StampJumpGuard): queues cleared
        self._guard = StampJumpGuard(n_inputs)
        self._lock = threading.Lock()

    def add(self, index: int, msg: Any) -> tuple[Any, ...] | None:
        """One message of input `index`; returns the set it completed (also passed to the callback), else None."""
        stamp = stamp_ns(msg.header)
        with self._lock:
            if self._guard.restarted(index, stamp):
                for i, stale in enumerate(self.queues):
                    self.unpaired[i] += len(stale)
                    stale.clear()
                self.restarts += 1
                log.info("input %d: stamp %d ns is more than %.1f s older than its newest: the stream started over "
                         "(a bag loop?), pairing queues cleared", index, stamp, RESTART_S)
            queue = self.queues[index]
            queue[stamp] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self.unpaired[index] += 1
            if stamp not in queue:  # older than a full queue: dropped at once (message_filters never emits it)
                return None
            candidates = []
            for other in self.queues[:index] + self.queues[index + 1:]:
                near = [(s, abs(s - stamp)) for s in other if abs(s - stamp) <= self.slop_ns]
                if not near:
                    return None
                candidates.append([s for s, _ in sorted(near, key=lambda pair: pair[1])])  # stable: queue order
            for combination in itertools.product(*candidates):
                stamps = list(combination)
                stamps.insert(index, stamp)
                if max(stamps) - min(stamps) < self.slop_ns:
                    msgs = tuple(q.pop(s) for q, s in zip(self.queues, stamps))
                    self.emitted += 1
                    self.callback(*msgs)
                    return msgs
            return None


class DepthFrameSync:
    """Colour + depth through ApproximateTimeSync, with the latest CameraInfo received (not synchronised):
    `callback(image, depth, camera_info_or_None)` per pair. Used by the DDS transport and the bag tool; the
    rclpy node does the same with message_filters and a plain CameraInfo subscription."""

    IMAGE, DEPTH = 0, 1

    def __init__(self, queue_size: int, slop_s: float, callback: Callable[[Any, Any, Any], None]) -> None:
        self.camera_info: Any = None
        self._callback = callback
        self.sync = ApproximateTimeSync(2, queue_size, slop_s, self._paired)

    def add_image(self, msg: Any) -> None:
        self.sync.add(self.IMAGE, msg)

    def add_depth(self, msg: Any) -> None:
        self.sync.add(self.DEPTH, msg)

    def add_camera_info(self, msg: Any) -> None:
        self.camera_info = msg

    def _paired(self, image: Any, depth: Any) -> None:
        self._callback(image, depth, self.camera_info)
