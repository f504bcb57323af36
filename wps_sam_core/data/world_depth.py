"""Depth for the procedural part world (`wps-sam world --depth`): an aligned depth image and K per image (or per
frame of a clip, `--sequence`: one DepthPlan per clip, so parts keep their distance as they move), optionally with
RealSense-like sensor noise, and the ground-truth 3D centre of every part instance.

The 2D scene is not touched (its random stream is not read): depth comes from its own stream
(seed, split, index, DEPTH_STREAM), so a world written with --depth has byte-identical images and masks.

Geometry, camera optical frame (x right, y down, z forward, metres), K of a D435-like colour camera:
- background: a tilted plane (a table or a wall) behind every object; clutter lies flat on it;
- objects: the nearest one is drawn last, so distances are drawn in `depth_range` and sorted far to near in
  drawing order; each object is a tilted surface with a dome bulging towards the camera;
- parts: the object's surface plus a per-class offset: a mug handle 1-3 cm in front of the body, a car
  window recessed, a hammer head proud of its handle, legs in front of or behind the torso, ...;
- the foreground occluder (world.Scene.occluder) floats in front of what it hides.
Sensor noise (noise level 1 = RealSense D4xx-like): Gaussian with sigma = level * (0.001 z + 0.002 z^2)
(0.3 % of z at 1 m, 0.7 % at 3 m: stereo error grows with z^2); pixels at depth edges (3x3 range > 2 % of
z) dropped (0, 40 %) or smeared into flying pixels between the two surfaces (25 %); random holes (blobs of
0) and 1 % single-pixel dropouts; 0.2 % speckle (z x U(0.5, 1.5)). Thin parts (legs, tails) are mostly
edge and suffer most, as on a real sensor. Written as 16UC1 PNG in millimetres, as RealSense drivers record.

Ground truth: `centre_3d_m`/`size_3d_m` of each part = geometry3d.instance_centres (the robust centre of
lift_to_3d) of its GT mask on the NOISE-FREE depth as written (millimetres), so a 3D error measured against
it is the pipeline's alone (mask + noise + robust centre), not a different centre definition.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import WpsSamError
from ..image_io import write_png
from ..postprocess.geometry3d import CameraIntrinsics, instance_centres

DEPTH_STREAM = 3  # appended to (seed, split, index): a random stream the 2D scene never reads
NOISE_STREAM = 4
DEPTH_UNIT_M = 0.001  # 16UC1 millimetres
DEFAULT_DEPTH_RANGE = (0.4, 3.0)  # object distances, metres
HFOV_DEG = 69.0  # RealSense D435 colour camera
MAX_DEPTH_M = 10.0
# per part class: offset range (metres, negative = towards the camera) from its object's surface
PART_OFFSETS: dict[str, tuple[float, float]] = {
    "mug_handle": (-0.03, -0.01), "bottle_cap": (-0.01, 0.0), "hammer_head": (-0.02, -0.005),
    "quadruped_head": (-0.04, -0.01), "quadruped_leg": (-0.03, 0.06), "quadruped_tail": (0.0, 0.03),
    "car_wheel": (-0.02, -0.005), "car_window": (0.005, 0.015),
}


def camera_intrinsics(size: int) -> CameraIntrinsics:
    """K of the world's square images: HFOV_DEG horizontal field of view, principal point at the centre."""
    f = (size / 2) / math.tan(math.radians(HFOV_DEG) / 2)
    return CameraIntrinsics(f, f, (size - 1) / 2, (size - 1) / 2, size, size)


def check_depth_range(depth_range: tuple[float, float]) -> tuple[float, float]:
    near, far = (float(v) for v in depth_range)
    if not (0.1 <= near <= far <= MAX_DEPTH_M / 2):
        raise WpsSamError(f"--depth-range must be NEAR FAR metres with 0.1 <= NEAR <= FAR <= {MAX_DEPTH_M / 2:g}, "
                          f"got {near:g} {far:g}")
    return near, far


def check_depth_noise(level: float | None) -> float | None:
    if level is not None and not (0.0 <= float(level) <= 10.0):  # also refuses NaN
        raise WpsSamError(f"--depth-noise must be a noise level in [0, 10] (1 = RealSense-like), got {level:g}")
    return None if level is None else float(level)


@dataclass
class DepthPlan:
    """The random depth layout of one still image or one clip (drawn once, so a clip's frames agree)."""

    plane_z: float  # background plane's depth on the optical axis, metres
    plane_tilt: np.ndarray  # (2,) d(1/z)-tilt of the plane along x and y rays
    distances: np.ndarray  # per object (drawing order), metres: sorted far to near
    part_offsets: dict[int, float]  # part key -> offset from its object's surface, metres
    object_tilts: np.ndarray  # (objects, 2) dz per metre lateral
    bulges: np.ndarray  # (objects,) dome height as a fraction of the object's radius
    occluder_gap: float  # the foreground occluder is this much nearer than the nearest object


def plan_depth(rng: np.random.Generator, parts: Sequence[tuple[int, int]], n_objects: int,
               depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE) -> DepthPlan:
    """parts: (key, class index into PART_CLASSES) of every part, in drawing order."""
    from .world import PART_CLASSES  # world imports this module; no cycle at import time

    distances = np.sort(rng.uniform(*depth_range, n_objects))[::-1]  # drawn later = nearer
    plane_z = float(distances.max(initial=depth_range[1])) + rng.uniform(0.15, 1.0)
    plane_tilt = rng.uniform(-0.5, 0.5, 2)
    offsets = {key: float(rng.uniform(*PART_OFFSETS.get(PART_CLASSES[c], (0.0, 0.0)))) for key, c in parts}
    tilts, bulges = np.zeros((n_objects, 2)), np.zeros(n_objects)
    for o in range(n_objects):
        tilts[o], bulges[o] = rng.uniform(-0.4, 0.4, 2), rng.uniform(0.0, 0.25)
    return DepthPlan(plane_z, plane_tilt, distances, offsets, tilts, bulges, float(rng.uniform(0.05, 0.3)))


def render_planned(plan: DepthPlan, k: CameraIntrinsics, part_map: np.ndarray, parts: dict[int, tuple[int, int]],
                   object_areas: Sequence[float], occluder: np.ndarray | None = None,
                   object_centres: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """HxW float64 metres, noise-free (module docstring). part_map: HxW part keys (0 = none); parts: key ->
    (object index, key into plan.part_offsets); object_areas: pixels per object (sets its dome's radius);
    object_centres: the domes' centres in pixels (default: each object's visible centroid)."""
    size = part_map.shape[0]
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    rays_x, rays_y = (u - k.cx) / k.fx, (v - k.cy) / k.fy
    tilt_x, tilt_y = plan.plane_tilt
    depth = plan.plane_z / np.maximum(1.0 - tilt_x * rays_x - tilt_y * rays_y, plan.plane_z / MAX_DEPTH_M)  # a plane
    lut_object, lut_offset = np.full(int(part_map.max(initial=0)) + 1, -1), np.zeros(int(part_map.max(initial=0)) + 1)
    for value, (obj, key) in parts.items():
        if value < lut_object.size:
            lut_object[value], lut_offset[value] = obj, plan.part_offsets[key]
    object_of_pixel = lut_object[part_map]
    for o, z_o in enumerate(plan.distances):
        mask = object_of_pixel == o
        if not mask.any():
            continue
        if object_centres is None:
            rows, cols = np.nonzero(mask)
            cu, cv = cols.mean(), rows.mean()
        else:
            cu, cv = object_centres[o]
        radius = max(0.5 * math.sqrt(object_areas[o]), 2.0) * z_o / k.fx  # metres
        dx, dy = (u[mask] - cu) * z_o / k.fx, (v[mask] - cv) * z_o / k.fy
        dome = plan.bulges[o] * radius * np.maximum(0.0, 1.0 - (dx ** 2 + dy ** 2) / radius ** 2)
        depth[mask] = z_o + plan.object_tilts[o, 0] * dx + plan.object_tilts[o, 1] * dy - dome
    depth += lut_offset[part_map]
    if occluder is not None and occluder.any():
        depth[occluder] = max(0.2, float(plan.distances.min(initial=plan.plane_z)) - plan.occluder_gap)
    return np.clip(depth, 0.2, MAX_DEPTH_M)


def render_depth(scene, k: CameraIntrinsics, rng: np.random.Generator,
                 depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE) -> np.ndarray:
    """HxW float64 metres, noise-free, for a world.Scene (part_ids value i = scene.parts[i - 1])."""
    plan = plan_depth(rng, [(i, p.class_index) for i, p in enumerate(scene.parts, start=1)], len(scene.objects),
                      depth_range)
    parts = {i: (p.object_index, i) for i, p in enumerate(scene.parts, start=1)}
    return render_planned(plan, k, scene.part_ids, parts, [o.amodal_area for o in scene.objects], scene.occluder)


def sensor_noise(depth_m: np.ndarray, rng: np.random.Generator, level: float = 1.0) -> np.ndarray:
    """A RealSense-like measurement of `depth_m` (module docstring); 0 = no depth."""
    z = depth_m.copy()
    kernel = np.ones((3, 3), np.uint8)
    near, far = cv2.erode(depth_m, kernel), cv2.dilate(depth_m, kernel)
    edge = (far - near) > 0.02 * depth_m
    draw = rng.random(z.shape)
    smear = edge & (draw < 0.25)
    z[smear] = near[smear] + rng.random(int(smear.sum())) * (far - near)[smear]  # flying pixels
    z += rng.normal(0.0, 1.0, z.shape) * level * (0.001 * depth_m + 0.002 * depth_m ** 2)
    speckle = rng.random(z.shape) < 0.002 * level
    z[speckle] *= rng.uniform(0.5, 1.5, int(speckle.sum()))
    holes = np.zeros(z.shape, np.uint8)
    size = z.shape[0]
    for _ in range(int(rng.poisson(2 * level))):
        centre = tuple(int(c) for c in rng.uniform(0, size, 2))
        axes = tuple(int(a) for a in rng.uniform(0.01, 0.05, 2) * size + 1)
        cv2.ellipse(holes, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    z[(edge & (draw >= 0.6)) | (holes > 0) | (rng.random(z.shape) < 0.01 * level)] = 0.0
    return z


def to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """16UC1: millimetres, 0 = no depth (non-positive, or past the format's 65.535 m)."""
    mm = np.round(np.where(np.isfinite(depth_m), depth_m, 0.0) / DEPTH_UNIT_M)
    return np.where((mm > 0) & (mm <= 65535), mm, 0).astype(np.uint16)


def depth_rng(seed: int, name: str, *indices: int) -> np.random.Generator:
    """A stream of its own: (seed, name, indices...), e.g. (seed, split, image index, DEPTH_STREAM)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8")), *indices])


def add_depth(out: Path, split: str, index: int, seed: int, scene, image_entry: dict, part_anns: list[dict],
              depth_noise: float | None, depth_range: tuple[float, float]) -> None:
    """The still world's image `index`: depth from render_depth, written by write_depth.
    `part_anns` are the image's part annotations in scene.parts order (annotation k = part_ids value k)."""
    k = camera_intrinsics(scene.part_ids.shape[0])
    clean = render_depth(scene, k, depth_rng(seed, split, index, DEPTH_STREAM), depth_range)
    noise_rng = depth_rng(seed, split, index, NOISE_STREAM)
    write_depth(out, split, image_entry, clean, k, scene.part_ids, range(1, len(part_anns) + 1), part_anns,
                depth_noise, noise_rng)


def write_depth(out: Path, split: str, image_entry: dict, clean_m: np.ndarray, k: CameraIntrinsics,
                part_map: np.ndarray, values: Sequence[int], part_anns: list[dict], depth_noise: float | None,
                noise_rng: np.random.Generator) -> None:
    """Write an image's depth (and noisy depth) PNGs; fill its camera entry and its parts' GT 3D centres
    (part_anns[i] is the part whose pixels read values[i] in part_map).

    Files: depth/<split>/<file_name> (noise-free) and, with depth_noise, depth_noisy/<split>/<file_name>:
    folders parallel to images/, so image-folder readers never take a depth map for a colour image.
    """
    clean_mm = to_millimetres(clean_m)
    name = image_entry["file_name"]
    camera = {"K": [round(float(v), 6) for v in k.matrix().reshape(-1)], "depth_unit_m": DEPTH_UNIT_M,
              "depth_file": f"depth/{split}/{name}"}
    write_png(out / camera["depth_file"], clean_mm)
    if depth_noise is not None:
        noisy = sensor_noise(clean_mm * DEPTH_UNIT_M, noise_rng, depth_noise)
        camera["noisy_depth_file"] = f"depth_noisy/{split}/{name}"
        camera["depth_noise"] = depth_noise
        write_png(out / camera["noisy_depth_file"], to_millimetres(noisy))
    image_entry["camera"] = camera
    centre, extent, n = instance_centres(part_map, list(values), clean_mm, k, DEPTH_UNIT_M)
    for ann, c, s, count in zip(part_anns, centre, extent, n):
        if count:  # every part pixel has a noise-free depth; kept general
            ann["centre_3d_m"] = [round(float(v), 6) for v in c]
            ann["size_3d_m"] = [round(float(v), 6) for v in s]


class SequenceDepth:
    """Depth for one clip of world_sequence: ONE DepthPlan for all its frames (the same distances, plane, tilts
    and part offsets, so a part's depth changes only as it moves), each object's dome centred on its pose;
    sensor noise drawn per frame. `add` writes a frame's files and fills its camera entry and GT centres."""

    def __init__(self, out: Path, split: str, seed: int, clip: int, clip_plan, frames: int,
                 depth_noise: float | None, depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE) -> None:
        self.out, self.split, self.seed, self.clip, self.frames = Path(out), split, seed, clip, frames
        self.depth_noise, self.movers = check_depth_noise(depth_noise), clip_plan.movers
        classes = [(obj, c) for obj, mover in enumerate(self.movers) for c in mover.part_classes]  # track id order
        self.parts = {track: (obj, track) for track, (obj, _) in enumerate(classes, start=1)}
        rng = depth_rng(seed, f"{split}/sequence", clip, DEPTH_STREAM)
        self.plan = plan_depth(rng, [(t, c) for t, (_, c) in enumerate(classes, start=1)], len(self.movers),
                               check_depth_range(depth_range))
        self.k = camera_intrinsics(clip_plan.size)

    def add(self, frame_id: int, frame, image_entry: dict, part_anns: list[dict]) -> None:
        """part_anns: the frame's part annotations in frame.parts order."""
        poses = [mover.pose(frame_id / max(self.frames - 1, 1)) for mover in self.movers]
        areas = [(0.7 * scale) ** 2 for _, scale, _ in poses]  # ~ the still world's amodal area of an object
        clean = render_planned(self.plan, self.k, frame.track_ids, self.parts, areas, frame.occluder,
                               [(float(c[0]), float(c[1])) for c, _, _ in poses])
        noise_rng = depth_rng(self.seed, f"{self.split}/sequence", self.clip, frame_id, NOISE_STREAM)
        write_depth(self.out, self.split, image_entry, clean, self.k, frame.track_ids, list(frame.parts), part_anns,
                    self.depth_noise, noise_rng)


def read_depth(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A 16UC1 depth PNG as uint16 (millimetres); one-line error if missing, not 16-bit or of the wrong size."""
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise WpsSamError(f"cannot read depth image {path}")
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise WpsSamError(f"depth image {path} must be a single-channel 16-bit PNG (16UC1 millimetres), "
                          f"got {depth.dtype} with shape {depth.shape}")
    if shape is not None and depth.shape != tuple(shape):
        raise WpsSamError(f"depth image {path} is {depth.shape[1]}x{depth.shape[0]}, the image is "
                          f"{shape[1]}x{shape[0]}")
    return depth
