"""PartTracker: the same part keeps its id from frame to frame (numpy + scipy; no torch, no ROS).

Per frame: each live track predicts its mask (its last mask shifted by a constant velocity, in
pixels per second from the stamps), then, class by class, the Hungarian algorithm assigns this
frame's instances to tracks in two stages (as ByteTrack matches its leftovers in a second, looser round):
1. on cost = 1 - mask IoU; a pair below `match_iou` never matches, and the masks' bounding boxes bound
   the IoU from above, so most pairs are refused without touching a pixel;
2. the instances and tracks left over, on cost = 1 - IoU of the (predicted) bounding boxes, from
   SECOND_STAGE_BOX_IOU on: a thin part that turns (a leg, a handle) or one sliding into the frame overlaps its
   last mask too little, its box still does. Mask IoU goes first because it tells apart parts of one class
   side by side (four legs) that boxes confuse.

Track ids:
- 0 means "no id": a new track stays tentative (id 0) until it has been matched in
  `track_min_hits` consecutive frames; a tentative track that misses a frame is dropped.
- A confirmed track keeps its id while it misses up to `track_max_age` consecutive frames (it is
  predicted through them) and is deleted at the next miss.
- Ids are positive and fit a mono16 instance map: 1, 2, ..., 65535, then the counter wraps to 1
  (0 stays "no id"), skipping ids still held by live tracks. So an id is never reused before 65535
  others have been issued, and never while its track lives. A reset does not restart the counter:
  after a reset every part gets an id it has not had before.

Resets (counted in `resets` / `resets_by_reason` for /diagnostics, logged at INFO): a stamp earlier
than the previous frame's ("time jumped backwards", e.g. `ros2 bag play --loop`), a gap longer than
`track_reset_s` (0 = never), and a change of image size. Equal stamps are allowed (velocity is then
left as it was).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from numbers import Integral, Real
from typing import Protocol, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..errors import WpsSamError
from .objects import mask_bounds, objects_from_parts

log = logging.getLogger(__name__)

MAX_TRACK_ID = 65535  # mono16
NO_ID = 0
RESET_BACKWARDS = "time jumped backwards"
RESET_GAP = "gap longer than track_reset_s"
RESET_IMAGE_SIZE = "image size changed"
RESET_BY_CALLER = "reset by caller"
RESET_REASONS = (RESET_BACKWARDS, RESET_GAP, RESET_IMAGE_SIZE, RESET_BY_CALLER)
_INFEASIBLE = 1e6  # cost of a pair below match_iou: Hungarian needs finite costs
# Second association stage: the parts and tracks left unmatched by mask IoU are matched on the IoU of their
# (predicted) bounding boxes from this value on. Chosen on the world's val clips (training/tracking_table.py:
# 0.05 / 0.1 / 0.2): a thin part that turns or a part sliding into the frame keeps a box that overlaps far more
# than its mask does (on GT masks 26 % of consecutive-frame pairs have mask IoU < 0.3, 8 % box IoU < 0.3).
SECOND_STAGE_BOX_IOU = 0.05
_VELOCITY_SMOOTHING = 0.5  # weight of the newest velocity measurement (masks jitter a little)


class TrackableInstance(Protocol):
    """What the tracker reads of an instance; `PartInstance` fits. Box and score are not needed:
    the tracker takes each mask's own bounding box, so a box that is not tight cannot break the gate."""

    class_id: int
    mask: np.ndarray  # HxW bool (or integer, nonzero = part), the same size for all instances of a frame


@dataclass(frozen=True)
class PartObservation:
    """A light instance for callers without a `PartInstance` (tests, GT-box evaluation)."""

    class_id: int
    mask: np.ndarray = field(repr=False)


def _check_number(name: str, value: object, kind: type) -> None:
    if isinstance(value, bool) or not isinstance(value, kind):
        raise WpsSamError(f"{name} must be {'an integer' if kind is Integral else 'a number'}, got {value!r}")


@dataclass(frozen=True)
class TrackerSettings:
    """Tracking knobs; immutable and validated on construction, swapped whole at run time."""

    match_iou: float = 0.5  # least mask IoU (with the predicted mask) for a match, in (0, 1]
    track_max_age: int = 10  # frames a confirmed track survives unmatched (0 = dies at the first miss)
    track_min_hits: int = 1  # consecutive matched frames before a new track gets an id (1 = at once)
    track_reset_s: float = 5.0  # a gap between frames longer than this resets the tracker (0 = never)

    def __post_init__(self) -> None:
        for name, kind in (("match_iou", Real), ("track_max_age", Integral), ("track_min_hits", Integral),
                           ("track_reset_s", Real)):
            _check_number(name, getattr(self, name), kind)
        if not 0.0 < self.match_iou <= 1.0:
            raise WpsSamError(f"match_iou must be in (0, 1], got {self.match_iou}")
        if self.track_max_age < 0:
            raise WpsSamError(f"track_max_age must be >= 0 frames, got {self.track_max_age}")
        if not 1 <= self.track_min_hits <= 1000:
            raise WpsSamError(f"track_min_hits must be in [1, 1000] frames, got {self.track_min_hits}")
        if not (np.isfinite(self.track_reset_s) and self.track_reset_s >= 0):
            raise WpsSamError(f"track_reset_s must be a finite number of seconds >= 0 (0 = never), "
                              f"got {self.track_reset_s}")


@dataclass(frozen=True)
class TrackerReset:
    """One reset: `reason` is one of RESET_REASONS (stable, for counting), `detail` says the numbers."""

    reason: str
    detail: str
    stamp_ns: int


@dataclass(frozen=True)
class _Crop:
    """A mask as its bounding-box crop placed at (y0, x0) in the frame; `area` pixels are set."""

    pixels: np.ndarray
    y0: int
    x0: int
    area: int

    @property
    def y1(self) -> int:
        return self.y0 + self.pixels.shape[0]

    @property
    def x1(self) -> int:
        return self.x0 + self.pixels.shape[1]

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.y0 + self.y1) / 2.0, (self.x0 + self.x1) / 2.0])


def _crop(mask: np.ndarray) -> _Crop | None:
    """The mask's bounding-box crop, or None for an empty mask (it can neither match nor start a track)."""
    box = mask_bounds(mask)
    if box is None:
        return None
    pixels = mask[box.y0:box.y1, box.x0:box.x1]
    return _Crop(pixels, box.y0, box.x0, int(pixels.sum()))


def _shifted(crop: _Crop, dy: int, dx: int, shape: tuple[int, int]) -> _Crop | None:
    """The crop moved by (dy, dx) and clipped to the frame; None once nothing of it is left inside."""
    if dy == 0 and dx == 0:
        return crop
    y0, x0 = crop.y0 + dy, crop.x0 + dx
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y0 + crop.pixels.shape[0], shape[0]), min(x0 + crop.pixels.shape[1], shape[1])
    if cy0 >= cy1 or cx0 >= cx1:
        return None
    pixels = crop.pixels[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    area = int(pixels.sum())
    return _Crop(pixels, cy0, cx0, area) if area else None


def _mask_iou(a: _Crop, b: _Crop, min_iou: float) -> float:
    """Mask IoU of two crops; 0.0 without counting pixels when the boxes cap it below `min_iou`."""
    y0, y1, x0, x1 = max(a.y0, b.y0), min(a.y1, b.y1), max(a.x0, b.x0), min(a.x1, b.x1)
    if y0 >= y1 or x0 >= x1:
        return 0.0
    bound = min(a.area, b.area, (y1 - y0) * (x1 - x0))  # the intersection can be no larger
    if bound < min_iou * (a.area + b.area - bound):
        return 0.0
    inter = int(np.count_nonzero(a.pixels[y0 - a.y0:y1 - a.y0, x0 - a.x0:x1 - a.x0]
                                 & b.pixels[y0 - b.y0:y1 - b.y0, x0 - b.x0:x1 - b.x0]))
    return inter / (a.area + b.area - inter)


def _box_iou(a: _Crop, b: _Crop) -> float:
    """IoU of the two crops' bounding boxes."""
    y0, y1, x0, x1 = max(a.y0, b.y0), min(a.y1, b.y1), max(a.x0, b.x0), min(a.x1, b.x1)
    if y0 >= y1 or x0 >= x1:
        return 0.0
    inter = (y1 - y0) * (x1 - x0)
    return inter / (a.pixels.size + b.pixels.size - inter)


@dataclass
class _Track:
    """One part over time: its last matched mask and stamp, a velocity (pixels/s), hit/miss counts."""

    class_id: int
    crop: _Crop
    stamp_ns: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    hits: int = 1  # consecutive matched frames
    misses: int = 0  # consecutive unmatched frames
    track_id: int = NO_ID

    def predicted(self, stamp_ns: int, shape: tuple[int, int]) -> _Crop | None:
        """Where the mask should be at `stamp_ns` if the part kept its velocity."""
        dy, dx = np.rint(self.velocity * (stamp_ns - self.stamp_ns) * 1e-9).astype(int)
        return _shifted(self.crop, int(dy), int(dx), shape)

    def matched(self, crop: _Crop, stamp_ns: int) -> None:
        dt = (stamp_ns - self.stamp_ns) * 1e-9
        if dt > 0:
            measured = (crop.center - self.crop.center) / dt
            self.velocity = measured if self.hits == 1 else (
                _VELOCITY_SMOOTHING * measured + (1 - _VELOCITY_SMOOTHING) * self.velocity)
        self.crop, self.stamp_ns = crop, stamp_ns
        self.hits, self.misses = self.hits + 1, 0


def _assign(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Hungarian assignment on cost 1 - IoU; (row, col) pairs with IoU >= min_iou only."""
    if iou.size == 0:
        return []
    cost = np.where(iou >= min_iou, 1.0 - iou, _INFEASIBLE)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]


def _frame_masks(instances: Sequence[TrackableInstance]) -> tuple[list[np.ndarray], list[int]]:
    """The instances' masks and class ids, checked: 2-D, boolean or integer, one size for the frame."""
    masks, class_ids = [], []
    for i, inst in enumerate(instances):
        mask, class_id = np.asarray(inst.mask), inst.class_id
        _check_number(f"instance {i}: class_id", class_id, Integral)
        if mask.ndim != 2:
            raise WpsSamError(f"instance {i}: mask must be a 2-D (HxW) array, got shape {mask.shape}")
        if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
            raise WpsSamError(f"instance {i}: mask must be boolean (or integer), got dtype {mask.dtype}")
        if masks and mask.shape != masks[0].shape:
            raise WpsSamError(f"instance {i}: mask size {mask.shape} differs from instance 0's {masks[0].shape}")
        masks.append(mask.astype(bool, copy=False))
        class_ids.append(int(class_id))
    return masks, class_ids


class PartTracker:
    """Turns each frame's part instances into track ids (see the module docstring for the rules).

    One tracker per image stream; `update` is called once per frame, in stamp order, and is thread-safe.
    """

    def __init__(self, settings: TrackerSettings | None = None, second_stage_box_iou: float = SECOND_STAGE_BOX_IOU
                 ) -> None:
        """`second_stage_box_iou` > 1 turns the box stage off (for measuring what it brings)."""
        self._settings = TrackerSettings() if settings is None else self._checked(settings)
        self._second_stage_box_iou = float(second_stage_box_iou)
        self._lock = threading.Lock()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_stamp_ns: int | None = None
        self._shape: tuple[int, int] | None = None
        self.resets = 0
        self.resets_by_reason: dict[str, int] = {reason: 0 for reason in RESET_REASONS}
        self.last_reset: TrackerReset | None = None  # the latest reset, kept for /diagnostics
        self.reset_on_last_update: TrackerReset | None = None  # set when the latest update() reset first

    @staticmethod
    def _checked(settings: object) -> TrackerSettings:
        if not isinstance(settings, TrackerSettings):
            raise WpsSamError(f"tracker settings must be a TrackerSettings, got {type(settings).__name__}")
        return settings

    @property
    def settings(self) -> TrackerSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: TrackerSettings) -> None:
        """Swap the settings at run time (a ROS parameter change); live tracks are kept."""
        checked = self._checked(settings)
        with self._lock:
            self._settings = checked

    def update(self, instances: Sequence[TrackableInstance], stamp_ns: int) -> list[int]:
        """This frame's instances and stamp (ns) -> one track id per instance, in order (0 = no id yet)."""
        _check_number("stamp_ns", stamp_ns, Integral)
        stamp_ns = int(stamp_ns)
        masks, class_ids = _frame_masks(instances)
        shape = masks[0].shape if masks else None
        with self._lock:
            self.reset_on_last_update = self._reset_if_discontinuous(stamp_ns, shape)
            self._last_stamp_ns = stamp_ns
            self._shape = shape or self._shape
            return self._step([_crop(m) for m in masks], class_ids, stamp_ns)

    def reset(self, reason: str = RESET_BY_CALLER, detail: str = "") -> TrackerReset:
        """Forget every track (ids are not reused); counted like an automatic reset."""
        with self._lock:
            return self._reset(reason, detail or reason, self._last_stamp_ns or 0)

    def diagnostics(self) -> dict[str, int | str]:
        """Counts for /diagnostics key-values."""
        with self._lock:
            confirmed = [t for t in self._tracks if t.track_id != NO_ID]
            return {
                "tracks_confirmed": len(confirmed),
                "tracks_lost": sum(t.misses > 0 for t in confirmed),
                "tracks_tentative": len(self._tracks) - len(confirmed),
                "resets": self.resets,
                **{f"resets ({reason})": n for reason, n in self.resets_by_reason.items()},
                "last_reset": self.last_reset.detail if self.last_reset else "",
            }

    # -- internals (called with the lock held) --------------------------------------------------

    def _reset_if_discontinuous(self, stamp_ns: int, shape: tuple[int, int] | None) -> TrackerReset | None:
        last, reset_s = self._last_stamp_ns, self._settings.track_reset_s
        if last is None:
            return None
        if stamp_ns < last:
            return self._reset(RESET_BACKWARDS, f"{RESET_BACKWARDS}: stamp {stamp_ns} ns < previous {last} ns",
                               stamp_ns)
        if reset_s > 0 and stamp_ns - last > reset_s * 1e9:
            gap = (stamp_ns - last) * 1e-9
            return self._reset(RESET_GAP, f"{gap:.3f} s between frames > track_reset_s {reset_s:g} s", stamp_ns)
        if shape is not None and self._shape is not None and shape != self._shape:
            return self._reset(RESET_IMAGE_SIZE, f"{RESET_IMAGE_SIZE}: {self._shape} -> {shape}", stamp_ns)
        return None

    def _reset(self, reason: str, detail: str, stamp_ns: int) -> TrackerReset:
        self._tracks, self._last_stamp_ns, self._shape = [], None, None
        self.resets += 1
        self.resets_by_reason[reason] = self.resets_by_reason.get(reason, 0) + 1
        self.last_reset = TrackerReset(reason, detail, stamp_ns)
        log.info("part tracker reset: %s", detail)
        return self.last_reset

    def _step(self, crops: list[_Crop | None], class_ids: list[int], stamp_ns: int) -> list[int]:
        matches = self._associate(crops, class_ids, stamp_ns)
        owner: list[_Track | None] = [None] * len(crops)
        for det, track in matches.items():
            track.matched(crops[det], stamp_ns)
            owner[det] = track
        self._age_unmatched(set(map(id, matches.values())))
        for det, crop in enumerate(crops):
            if owner[det] is None and crop is not None:
                owner[det] = _Track(class_ids[det], crop, stamp_ns)
                self._tracks.append(owner[det])
        for track in owner:
            if track is not None and track.track_id == NO_ID and track.hits >= self._settings.track_min_hits:
                track.track_id = self._allocate_id()
        return [NO_ID if track is None else track.track_id for track in owner]

    def _associate(self, crops: list[_Crop | None], class_ids: list[int], stamp_ns: int) -> dict[int, _Track]:
        """Detection index -> matched track, one class at a time, in two stages (see the module docstring)."""
        shape = self._shape or (0, 0)
        predicted = [(t, t.predicted(stamp_ns, shape)) for t in self._tracks]
        min_iou, matches = self._settings.match_iou, {}
        for class_id in sorted(set(class_ids)):
            dets = [i for i, c in enumerate(class_ids) if c == class_id and crops[i] is not None]
            tracks = [(t, p) for t, p in predicted if t.class_id == class_id and p is not None]
            mask_iou = np.array([[_mask_iou(crops[d], p, min_iou) for _, p in tracks] for d in dets])
            first = {dets[r]: tracks[c][0] for r, c in _assign(mask_iou.reshape(len(dets), len(tracks)), min_iou)}
            matched = set(map(id, first.values()))
            dets = [d for d in dets if d not in first]
            tracks = [(t, p) for t, p in tracks if id(t) not in matched]
            box_iou = np.array([[_box_iou(crops[d], p) for _, p in tracks] for d in dets])
            second = _assign(box_iou.reshape(len(dets), len(tracks)), self._second_stage_box_iou)
            matches.update(first)
            matches.update({dets[r]: tracks[c][0] for r, c in second})
        return matches

    def _age_unmatched(self, matched: set[int]) -> None:
        """Unmatched tracks miss a frame; tentative ones die at once, confirmed ones after track_max_age."""
        alive = []
        for track in self._tracks:
            if id(track) not in matched:
                track.misses += 1
                if track.track_id == NO_ID or track.misses > self._settings.track_max_age:
                    continue
            alive.append(track)
        self._tracks = alive

    def _allocate_id(self) -> int:
        """The next id in 1..65535 not held by a live track (wrapping past 65535 to 1)."""
        live = {t.track_id for t in self._tracks}
        for _ in range(MAX_TRACK_ID):
            track_id = self._next_id
            self._next_id = track_id % MAX_TRACK_ID + 1
            if track_id not in live:
                return track_id
        raise WpsSamError(f"more than {MAX_TRACK_ID} live tracks: track ids no longer fit mono16")


def with_track_ids(seg, track_ids: Sequence[int]):
    """A copy of a PartSegmentation whose instance ids are track ids (`track_ids` from `update`, one per instance).

    Instances with track id 0 (not confirmed yet) are left out and their pixels read 0 in the instance map;
    the others keep their order (descending score) with `instance_id` = track id, and the instance map says
    the same pixel for pixel. The label map is shared unchanged: an unconfirmed part is still a part of its
    class. Objects (postprocess/objects.py) keep their parts: each object's id becomes the lowest track id
    among its confirmed parts and its part list names their track ids (an object with no confirmed part is
    left out), so an object keeps its id while that part keeps its track. `seg` itself is not modified.
    """
    if len(track_ids) != len(seg.instances):
        raise WpsSamError(f"{len(track_ids)} track ids for {len(seg.instances)} instances")
    lut = np.zeros(len(track_ids) + 1, np.uint16)
    lut[1:] = track_ids
    instances = [replace(inst, instance_id=int(track_id))
                 for inst, track_id in zip(seg.instances, track_ids) if track_id != NO_ID]
    instances, objects = objects_from_parts(instances)
    return replace(seg, instance_ids=lut[seg.instance_ids], instances=instances, objects=objects)
