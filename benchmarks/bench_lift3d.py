"""P4: lift_to_3d and part_points per frame (640x480, 16UC1 depth, N parts) -> one JSON line.

Side by side in one process: the vectorised lift (one sort of the valid part pixels by (instance, depth))
and the plain per-part loop of the same definition (boolean mask, np.median per part), which it must
equal. Parts are ellipses of 1-6 % of the image (a mug handle to a car door at 640x480), 5 % depth holes.
Target: lift_to_3d + part_points <= 10 ms per frame (a 30 Hz camera leaves 33 ms for everything).
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

from common import emit, machine, stats, timed

from wps_sam_core.postprocess.geometry3d import CameraIntrinsics, lift_to_3d, part_points
from wps_sam_core.segmenter import assemble

TARGET_MS = 10.0


def scene(parts: int, h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((parts, h, w), np.uint8)
    for m in masks:
        axes = (int(rng.uniform(0.05, 0.16) * w), int(rng.uniform(0.05, 0.16) * h))
        cv2.ellipse(m, (int(rng.uniform(0.15, 0.85) * w), int(rng.uniform(0.15, 0.85) * h)), axes,
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    seg = assemble(masks.astype(bool), (np.arange(parts) % 5 + 1), rng.uniform(0.5, 1, parts), np.ones(parts),
                   [f"part_{k}" for k in range(1, 6)])
    yy, xx = np.mgrid[0:h, 0:w]
    depth_m = 0.6 + 0.002 * xx + 0.001 * yy + rng.normal(0, 0.005, (h, w))
    depth = np.round(depth_m * 1000).astype(np.uint16)
    depth[rng.random((h, w)) < 0.05] = 0
    return seg, depth


def per_part_loop(seg, depth, k: CameraIntrinsics):
    centres = []
    for inst in seg.instances:
        rows, cols = np.nonzero((seg.instance_ids == inst.instance_id) & (depth > 0))
        z = depth[rows, cols] * 0.001
        med = np.median(z)
        keep = np.abs(z - med) <= max(3 * 1.4826 * np.median(np.abs(z - med)), 0.005)
        centres.append(np.mean(np.stack([(cols - k.cx) * z / k.fx, (rows - k.cy) * z / k.fy, z], 1)[keep], 0))
    return np.array(centres)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    seg, depth = scene(args.parts, args.height, args.width)
    k = CameraIntrinsics(615.0, 615.0, args.width / 2 - 0.5, args.height / 2 - 0.5, args.width, args.height)
    lifted = lift_to_3d(seg, depth, k, 0.001)
    same = np.allclose([p.centre for p in lifted.parts], per_part_loop(seg, depth, k), atol=1e-9)
    lift_s, points_s, loop_s = [], [], []
    for _ in range(args.repeats):  # interleaved, so load drift hits all alike
        lift_s.append(timed(lambda: lift_to_3d(seg, depth, k, 0.001)))
        points_s.append(timed(lambda: part_points(seg, depth, k, 0.001)))
        loop_s.append(timed(lambda: per_part_loop(seg, depth, k)))
    ms = lambda s: {key: (v * 1000 if key != "n" else v) for key, v in stats(s).items()}  # noqa: E731
    total = np.median(lift_s) * 1000 + np.median(points_s) * 1000
    emit({"bench": "lift3d", "image": [args.width, args.height], "parts": len(seg.instances),
          "part_pixels": int((seg.instance_ids > 0).sum()), "lift_ms": ms(lift_s), "part_points_ms": ms(points_s),
          "per_part_loop_ms": ms(loop_s), "loop_over_lift": round(float(np.median(loop_s) / np.median(lift_s)), 2),
          "equal_to_loop": bool(same), "target_ms": TARGET_MS, "met": bool(total <= TARGET_MS), **machine()})


if __name__ == "__main__":
    main()
