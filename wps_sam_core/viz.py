"""Colours, overlays and legends for part label maps (the one palette of the project)."""
from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np


def palette(num_classes: int) -> np.ndarray:
    """(num_classes + 1) x 3 uint8 RGB; row 0 (background) is black, class k is row k.

    Golden-ratio hue steps keep neighbouring class ids far apart in colour.
    """
    colours = np.zeros((num_classes + 1, 3), dtype=np.uint8)
    for k in range(1, num_classes + 1):
        hue = (k * 0.618033988749895) % 1.0
        sat, val = (0.85, 0.95) if k % 2 else (0.65, 0.8)
        colours[k] = np.round(np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255)
    return colours


def overlay(image_rgb: np.ndarray, labels: np.ndarray, instance_ids: np.ndarray | None,
            class_names: Sequence[str], alpha: float = 0.55) -> np.ndarray:
    """Blend part colours over the image, outline each instance, and add a legend of the classes present."""
    colours = palette(len(class_names))
    out = image_rgb.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[labels[fg]]
    out = out.astype(np.uint8)
    if instance_ids is not None and instance_ids.any():
        edges = (cv2.morphologyEx(instance_ids.astype(np.uint16).view(np.int16), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) != 0)
        out[edges] = 255
    present = [k for k in np.unique(labels) if k > 0]
    return add_legend(out, [(class_names[k - 1], colours[k]) for k in present])


def add_legend(image: np.ndarray, entries: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """Append a legend panel to the right of the image (one swatch + name per line)."""
    if not entries:
        return image
    scale = max(0.35, min(0.6, image.shape[0] / 600))
    line = int(22 * scale / 0.5)
    width = 24 + max(cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for name, _ in entries) + 12
    panel = np.full((max(image.shape[0], line * len(entries) + 8), width, 3), 255, np.uint8)
    for i, (name, colour) in enumerate(entries):
        y = 6 + i * line
        cv2.rectangle(panel, (6, y), (6 + line - 6, y + line - 6), tuple(int(c) for c in colour), -1)
        cv2.putText(panel, name, (line + 6, y + line - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    canvas = np.full((panel.shape[0], image.shape[1] + width, 3), 255, np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    canvas[:, image.shape[1]:] = panel
    return canvas


def overlay_3d(image_rgb: np.ndarray, result, lifted, upscale: int = 1, alpha: float = 0.55) -> np.ndarray:
    """overlay() plus '<class> z=<z> m' written next to each part lifted to 3D (postprocess.geometry3d.Lifted3D),
    at the part's mask centroid; `upscale` (nearest neighbour) makes the text legible on small images."""
    up = lambda a: np.repeat(np.repeat(a, upscale, 0), upscale, 1)  # noqa: E731
    out = overlay(up(image_rgb), up(result.labels), up(result.instance_ids), result.class_names, alpha)
    ids = up(result.instance_ids)
    scale = max(0.35, min(0.55, ids.shape[0] / 900))
    boxes: list[tuple[int, int, int, int]] = []  # drawn labels, so later ones move down instead of overlapping
    for part in sorted(lifted.parts, key=lambda p: p.centre[2]):
        rows, cols = np.nonzero(ids == part.instance_id)
        if rows.size == 0:
            continue
        text = f"{part.class_name} z={part.centre[2]:.2f} m"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cx, cy = int(cols.mean()), int(rows.mean())
        spots = [(cx + 6, cy + th // 2), (cx + 6, cy - th), (cx + 6, cy + 2 * th), (cx - 6 - tw, cy + th // 2)]
        spots += [(cx + 6, cy + th // 2 + k * (th + base + 2)) for k in range(2, 40)]  # then further down
        for x, y in spots:  # the first spot inside the image that covers no label drawn before
            x, y = int(np.clip(x, 2, ids.shape[1] - tw - 2)), int(np.clip(y, th + 2, ids.shape[0] - base - 2))
            if not any(x < bx + bw + 4 and bx < x + tw + 4 and y - th < by and by - bh < y + base
                       for bx, by, bw, bh in boxes):
                break
        boxes.append((x, y, tw, th + base))
        if not (x - 8 <= cx <= x + tw + 8 and y - th - 8 <= cy <= y + base + 8):  # moved away: a leader line
            cv2.line(out, (cx, cy), (x if x > cx else x + tw, y - th // 2), (255, 255, 255), 1, cv2.LINE_AA)
        cv2.rectangle(out, (x - 2, y - th - 2), (x + tw + 2, y + base), (255, 255, 255), -1)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.circle(out, (cx, cy), 4, (255, 255, 255), -1)
        cv2.circle(out, (cx, cy), 3, (0, 0, 0), -1)
    return out
