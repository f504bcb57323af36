"""wps_sam_core: WPS-SAM weakly-supervised part segmentation on a frozen SAM. Never imports ROS.

The names below load on first use (module `__getattr__`), so importing a torch-free module such as
`wps_sam_core.errors` does not load torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "WpsSamError": "errors",
    "PartInstance": "segmenter",
    "PartSegmentation": "segmenter",
    "PartSegmenter": "segmenter",
    "SegmenterSettings": "segmenter",
    "load_segmenter": "segmenter",
    "CameraIntrinsics": "postprocess.geometry3d",
    "lift_to_3d": "postprocess.geometry3d",
    "part_points": "postprocess.geometry3d",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .errors import WpsSamError
    from .postprocess.geometry3d import CameraIntrinsics, lift_to_3d, part_points
    from .segmenter import PartInstance, PartSegmentation, PartSegmenter, SegmenterSettings, load_segmenter


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
