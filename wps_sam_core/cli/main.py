"""`wps-sam` command line: thin — parse, call the library, print. User errors: one line, exit 2."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from importlib.metadata import entry_points

from ..errors import WpsSamError

# Each module adds its subcommand with `register(subparsers)`; one line per module. Packages
# outside the core (the ROS side's `bag`) plug in through the `wps_sam.commands` entry-point group,
# so wps_sam_core never imports them.
COMMAND_MODULES = (
    "wps_sam_core.cli.predict",  # predict
    "wps_sam_core.cli.track",  # track
    "wps_sam_core.cli.world",  # world
    "wps_sam_core.cli.train",  # train
    "wps_sam_core.cli.cache",  # cache
    "wps_sam_core.cli.data",  # convert-pascal-part, dataset-info
    "wps_sam_core.cli.eval",  # eval
    "wps_sam_core.cli.export",  # export
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wps-sam", description="WPS-SAM part segmentation")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for entry in entry_points(group="wps_sam.commands"):
        entry.load().register(sub)
    return parser


SIGPIPE_EXIT = 128 + 13  # what a shell reports for a command killed by SIGPIPE (`wps-sam ... | head`)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user errors: one line, exit 2. A reader that goes away (`wps-sam ... | head`) ends
    the command quietly with exit 141, as it ends other Unix tools, for every subcommand and for --help."""
    try:
        try:
            return _run(argv)
        finally:  # buffered output to a closed pipe fails here, not in the interpreter's exit flush
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's exit flush must not fail again
        return SIGPIPE_EXIT


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except WpsSamError as exc:
        print(f"wps-sam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wps-sam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
