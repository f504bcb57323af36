"""A short clip of one moving object for the tracking tests of the node core, the DDS node and the bag tool.

The hammer of examples/world_test_000001.png (world scene (seed 3, "test", 1): a hammer among a few clutter
shapes) seen by a camera panning 4 px per frame: frame f is the 224x224 window at column 4 f, so the
hammer moves 4 px left per frame. The scene's exact part map comes with each frame, so a test can tell
which detection is the hammer's head or handle. The embedded model (score_threshold 0.5) finds the head
as one detection in every frame, ranked 1st by score except in frame 3 (2nd), so its per-frame instance
id changes while its track id must not; the handle is found in every frame too, in some frames with a
second fragment beside it. A test harness, imported as `from moving_object import ...`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

FRAMES = 8
STEP_PX = 4
WINDOW = 224
FRAME_NS = 100_000_000  # 10 Hz stamps
HAMMER_PARTS = ("hammer_handle", "hammer_head")


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray  # WINDOW x WINDOW x 3 uint8
    parts: dict[str, np.ndarray]  # hammer part class -> its GT visible pixels in this frame (bool)


@lru_cache(maxsize=1)
def hammer_clip(frames: int = FRAMES) -> tuple[Frame, ...]:
    from wps_sam_core.data.world import PART_CLASSES, render_scene

    scene = render_scene(3, 1, 256, "test")  # = examples/world_test_000001.png
    out = []
    for f in range(frames):
        y, x = 16, STEP_PX * f
        crop = (slice(y, y + WINDOW), slice(x, x + WINDOW))
        ids = scene.part_ids[crop]
        parts = {PART_CLASSES[p.class_index]: ids == k + 1 for k, p in enumerate(scene.parts)
                 if PART_CLASSES[p.class_index] in HAMMER_PARTS}
        out.append(Frame(np.ascontiguousarray(scene.image[crop]), parts))
    return tuple(out)


def id_on(part: np.ndarray, id_map: np.ndarray) -> int:
    """The id covering most of the part's labelled pixels in an instance map (0 if none of them is labelled)."""
    values, counts = np.unique(id_map[part & (id_map > 0)], return_counts=True)
    return int(values[np.argmax(counts)]) if values.size else 0


def ids_on(part: np.ndarray, id_map: np.ndarray) -> set[int]:
    """Every nonzero id on the part's pixels (a part the model splits in two has two)."""
    return set(np.unique(id_map[part]).tolist()) - {0}
