"""Tracking flags shared by the commands that see frames in order (`wps-sam bag --tracking`): instance ids
become track ids (wps_sam_core.postprocess.tracking). Defaults are TrackerSettings()'s; the flags are named
like the node parameters (track_match_iou -> --track-match-iou)."""
from __future__ import annotations

import argparse

from ..errors import WpsSamError
from ..postprocess.tracking import TrackerSettings

_FLAGS = (  # (flag, TrackerSettings field, type, metavar, help)
    ("--track-match-iou", "match_iou", float, "IOU", "least mask IoU of a part with a track's predicted mask (0, 1]"),
    ("--track-max-age", "track_max_age", int, "FRAMES", "frames a track keeps its id while its part is not seen"),
    ("--track-min-hits", "track_min_hits", int, "FRAMES",
     "frames in a row a new part must be seen before it gets an id"),
    ("--track-reset-s", "track_reset_s", float, "SECONDS",
     "a longer gap between frames resets the tracker; 0 = never"),
)


def add_tracking_args(parser: argparse.ArgumentParser, what: str = "frames") -> None:
    defaults = TrackerSettings()
    group = parser.add_argument_group("tracking")
    group.add_argument("--tracking", action="store_true",
                       help=f"instance ids become track ids, stable over the {what}; parts without a confirmed "
                            f"track are left out of the instances and the instance map")
    for flag, field, kind, metavar, text in _FLAGS:
        group.add_argument(flag, dest=field, type=kind, default=getattr(defaults, field), metavar=metavar,
                           help=f"{text} (default {getattr(defaults, field)})")


def tracker_settings_from_args(args: argparse.Namespace) -> TrackerSettings:
    """Validated: a bad value is one WpsSamError line naming the flag."""
    for flag, field, *_ in _FLAGS:  # one at a time, so the message names the flag that is wrong
        try:
            TrackerSettings(**{field: getattr(args, field)})
        except WpsSamError as exc:
            raise WpsSamError(f"{flag}: {exc}") from None
    return TrackerSettings(**{field: getattr(args, field) for _, field, *_ in _FLAGS})
