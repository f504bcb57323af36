#!/usr/bin/env python3
"""The README's 3D pictures: a world test image with each part's 3D centre written next to it, and an RViz-style
view of the labelled part cloud (part_points) from an oblique viewpoint.

    python3 training/parts_3d_picture.py [--world runs/embedded/world_depth] [--index 37]
        [--overlay docs/parts_3d.png] [--cloud docs/parts_3d_cloud.png]

The world split must have been written with --depth-noise (training/depth_table.py renders it); the sensor-noise
depth is used, as a robot would see it. The cloud view is a plain perspective render with a painter's algorithm
(cv2; no 3D plotting library needed): grey = the rest of the depth image, colours = part classes (viz.palette,
the `rgb` field RViz shows), black dots = the lift_to_3d centres, axes = the camera optical frame (x red, y green,
z blue, 10 cm), as RViz draws a TF frame.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np

from wps_sam_core.data.world_depth import read_depth
from wps_sam_core.image_io import read_image_rgb, write_png
from wps_sam_core.io_utils import atomic_write_bytes
from wps_sam_core.postprocess.geometry3d import CameraIntrinsics, lift_to_3d, part_points
from wps_sam_core.segmenter import load_segmenter
from wps_sam_core.viz import overlay_3d

BACKGROUND = (48, 48, 48)  # RViz's default background


def look_from(points: np.ndarray, target: np.ndarray, yaw: float, pitch: float, distance: float) -> np.ndarray:
    """Points (N x 3, optical frame) in a virtual camera orbiting `target`: yaw about the optical y axis (down),
    pitch about the x axis, `distance` metres from it; returns N x 3 in the virtual camera's optical frame."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    rot_y = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rot_x = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    return (points - target) @ (rot_x @ rot_y).T + [0, 0, distance]


def render_cloud(xyz: np.ndarray, colours: np.ndarray, centres: list[tuple[np.ndarray, str]], size=(900, 640),
                 yaw: float = -0.45, pitch: float = -0.35) -> np.ndarray:
    """Perspective render of coloured points (far first), centre markers with labels, the camera's axes."""
    w, h = size
    target = np.median(np.array([c for c, _ in centres]), 0) if centres else xyz.mean(0)
    distance = 2.8 * float(target[2])
    f = 0.9 * w
    canvas = np.full((h, w, 3), BACKGROUND, np.uint8)

    def project(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = look_from(np.atleast_2d(p), target, yaw, pitch, distance)
        z = np.maximum(q[:, 2], 1e-3)
        return np.stack([f * q[:, 0] / z + w / 2, f * q[:, 1] / z + h / 2], 1), q[:, 2]

    uv, depth = project(xyz)
    order = np.argsort(-depth)
    for (u, v), colour in zip(uv[order].astype(int), colours[order]):
        cv2.rectangle(canvas, (u - 1, v - 1), (u + 1, v + 1), tuple(int(c) for c in colour), -1)
    origin = np.zeros(3)
    for axis, colour in ((0, (255, 0, 0)), (1, (0, 200, 0)), (2, (60, 120, 255))):
        end = np.eye(3)[axis] * 0.1
        (a, b), _ = project(np.stack([origin, end]))
        cv2.line(canvas, tuple(a.astype(int)), tuple(b.astype(int)), colour, 3, cv2.LINE_AA)
    (o,), _ = project(origin)
    cv2.putText(canvas, "camera", (int(o[0]) + 6, int(o[1]) + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1,
                cv2.LINE_AA)
    taken: list[tuple[int, int]] = []  # label positions, so a label moves down instead of covering another
    for centre, text in sorted(centres, key=lambda c: c[0][1]):
        (p,), _ = project(centre)
        x, y = int(p[0]), int(p[1])
        cv2.circle(canvas, (x, y), 6, (255, 255, 255), -1)
        cv2.circle(canvas, (x, y), 4, (0, 0, 0), -1)
        ty = y + 5
        while any(abs(ty - oy) < 16 and abs(x - ox) < 200 for ox, oy in taken):
            ty += 16
        taken.append((x, ty))
        if ty != y + 5:
            cv2.line(canvas, (x, y), (x + 8, ty - 4), (200, 200, 200), 1, cv2.LINE_AA)
        cv2.putText(canvas, text, (x + 9, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=Path("runs/embedded/world_depth"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--index", type=int, default=37)
    parser.add_argument("--overlay", type=Path, default=Path("docs/parts_3d.png"))
    parser.add_argument("--cloud", type=Path, default=Path("docs/parts_3d_cloud.png"))
    args = parser.parse_args()
    data = json.loads((args.world / "annotations" / args.split / f"{args.split}.json").read_text())
    entry = data["images"][args.index]
    camera = entry["camera"]
    image = read_image_rgb(args.world / "images" / args.split / entry["file_name"])
    depth = read_depth(args.world / camera.get("noisy_depth_file", camera["depth_file"]), image.shape[:2])
    k = CameraIntrinsics.from_matrix(camera["K"], image.shape[1], image.shape[0])
    result = load_segmenter(device="cpu").segment(image)
    lifted = lift_to_3d(result, depth, k, camera["depth_unit_m"])
    picture = overlay_3d(image, result, lifted, upscale=2)
    ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    atomic_write_bytes(args.overlay, png.tobytes())  # compression 9: the README picture stays small

    cloud = part_points(result, depth, k, camera["depth_unit_m"])
    rest_v, rest_u = np.nonzero((result.labels == 0) & (depth > 0))
    keep = (rest_v % 2 == 0) & (rest_u % 2 == 0)  # a quarter of the scene for context, as a voxel filter would
    z = depth[rest_v[keep], rest_u[keep]] * camera["depth_unit_m"]
    rest = np.stack([(rest_u[keep] - k.cx) * z / k.fx, (rest_v[keep] - k.cy) * z / k.fy, z], 1)
    rgb_bits = cloud["rgb"].view(np.uint32)
    part_colours = np.stack([(rgb_bits >> 16) & 255, (rgb_bits >> 8) & 255, rgb_bits & 255], 1)
    xyz = np.concatenate([rest, np.stack([cloud["x"], cloud["y"], cloud["z"]], 1)])
    colours = np.concatenate([np.full((len(rest), 3), 110), part_colours])
    centres = [(np.array(p.centre), f"{p.class_name} z={p.centre[2]:.2f} m") for p in lifted.parts]
    write_png(args.cloud, render_cloud(xyz, colours, centres))
    print(f"{args.overlay}, {args.cloud}: {len(lifted.parts)} parts in 3D, {cloud.size} part points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
