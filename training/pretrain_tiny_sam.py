#!/usr/bin/env python3
"""Pre-train the tiny SAM class-agnostically on the generic-shapes world (see wps_sam_core/distill/sam_pretrain.py).

    python3 training/pretrain_tiny_sam.py --out runs/tiny_sam [--steps N] [--set key=value ...]

Writes OUT/sam.safetensors (official SAM key layout; `load_sam(sam_type, OUT/sam.safetensors)` loads it
strictly), OUT/log.jsonl and OUT/summary.json. Every PretrainConfig field can be set with --set.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace

from wps_sam_core.distill.sam_pretrain import PretrainConfig, pretrain
from wps_sam_core.errors import WpsSamError


def parse_overrides(items: list[str]) -> dict:
    types = {f.name: type(getattr(PretrainConfig(), f.name)) for f in fields(PretrainConfig)}
    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in types:
            raise WpsSamError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(types)}")
        values[key] = types[key](raw)
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, help="= --set steps=N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        if args.steps is not None:
            overrides["steps"] = args.steps
        summary = pretrain(replace(PretrainConfig(), **overrides), args.out, progress=not args.no_progress)
    except WpsSamError as exc:
        print(f"pretrain_tiny_sam: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("steps", "seconds", "weights", "final")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
