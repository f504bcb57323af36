"""Depth for the procedural part world (`wps-sam world --depth`): an aligned depth image and K per image,
optionally with RealSense-like sensor noise, and the ground-truth 3D centre of every part instance.

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
from pathlib import Path

import cv2
import numpy as np

from ..errors import WpsSamError
from ..io_utils import atomic_write_bytes
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


def render_depth(scene, k: CameraIntrinsics, rng: np.random.Generator,
                 depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE) -> np.ndarray:
    """HxW float64 metres, noise-free, for a world.Scene (see the module docstring)."""
    from .world import PART_CLASSES  # world imports this module lazily; no cycle at import time

    size = scene.part_ids.shape[0]
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    rays_x, rays_y = (u - k.cx) / k.fx, (v - k.cy) / k.fy
    distances = np.sort(rng.uniform(*depth_range, len(scene.objects)))[::-1]  # drawn later = nearer
    plane_z = float(distances.max(initial=depth_range[1])) + rng.uniform(0.15, 1.0)
    tilt_x, tilt_y = rng.uniform(-0.5, 0.5, 2)
    depth = plane_z / np.maximum(1.0 - tilt_x * rays_x - tilt_y * rays_y, plane_z / MAX_DEPTH_M)  # a true plane

    object_of_pixel = np.array([-1] + [p.object_index for p in scene.parts])[scene.part_ids]
    offsets = np.zeros(len(scene.parts) + 1)
    for i, part in enumerate(scene.parts, start=1):
        low, high = PART_OFFSETS.get(PART_CLASSES[part.class_index], (0.0, 0.0))
        offsets[i] = rng.uniform(low, high)
    for o, (obj, z_o) in enumerate(zip(scene.objects, distances)):
        tilt = rng.uniform(-0.4, 0.4, 2)
        bulge = rng.uniform(0.0, 0.25)
        mask = object_of_pixel == o
        if not mask.any():
            continue
        rows, cols = np.nonzero(mask)
        cu, cv = cols.mean(), rows.mean()
        radius = max(0.5 * math.sqrt(obj.amodal_area), 2.0) * z_o / k.fx  # metres
        dx, dy = (u[mask] - cu) * z_o / k.fx, (v[mask] - cv) * z_o / k.fy
        dome = bulge * radius * np.maximum(0.0, 1.0 - (dx ** 2 + dy ** 2) / radius ** 2)
        depth[mask] = z_o + tilt[0] * dx + tilt[1] * dy - dome
    depth += offsets[scene.part_ids]
    occluder = getattr(scene, "occluder", None)
    if occluder is not None and occluder.any():
        nearest = float(distances.min(initial=depth_range[0]))
        depth[occluder] = max(0.2, nearest - rng.uniform(0.05, 0.3))
    return np.clip(depth, 0.2, MAX_DEPTH_M)


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


def depth_rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8")), index, stream])


def add_depth(out: Path, split: str, index: int, seed: int, scene, image_entry: dict, part_anns: list[dict],
              depth_noise: float | None, depth_range: tuple[float, float]) -> None:
    """Write the image's depth (and noisy depth) PNGs and fill the camera entry and the parts' GT 3D centres.

    `part_anns` are the image's part annotations in scene.parts order (annotation k = part_ids value k).
    Files: depth/<split>/<name>.png (noise-free) and, with depth_noise, depth_noisy/<split>/<name>.png:
    folders parallel to images/, so image-folder readers never take a depth map for a colour image.
    """
    size = scene.part_ids.shape[0]
    k = camera_intrinsics(size)
    clean_mm = to_millimetres(render_depth(scene, k, depth_rng(seed, split, index, DEPTH_STREAM), depth_range))
    name = image_entry["file_name"]
    camera = {"K": [round(float(v), 6) for v in k.matrix().reshape(-1)], "depth_unit_m": DEPTH_UNIT_M,
              "depth_file": f"depth/{split}/{name}"}
    atomic_write_bytes(out / camera["depth_file"], _png16(clean_mm))
    if depth_noise is not None:
        noisy = sensor_noise(clean_mm * DEPTH_UNIT_M, depth_rng(seed, split, index, NOISE_STREAM), depth_noise)
        camera["noisy_depth_file"] = f"depth_noisy/{split}/{name}"
        camera["depth_noise"] = depth_noise
        atomic_write_bytes(out / camera["noisy_depth_file"], _png16(to_millimetres(noisy)))
    image_entry["camera"] = camera
    centre, extent, n = instance_centres(scene.part_ids, range(1, len(part_anns) + 1), clean_mm, k, DEPTH_UNIT_M)
    for ann, c, s, count in zip(part_anns, centre, extent, n):
        if count:  # every part pixel has a noise-free depth; kept general
            ann["centre_3d_m"] = [round(float(v), 6) for v in c]
            ann["size_3d_m"] = [round(float(v), 6) for v in s]


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


def _png16(depth_mm: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", depth_mm)
    if not ok:
        raise WpsSamError("could not encode a depth image as PNG")
    return encoded.tobytes()
