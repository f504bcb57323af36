"""The `wps-sam` command lines of training/*.sh use flags the CLI has: every one parses (nothing runs)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from wps_sam_core.cli.main import build_parser

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "training").glob("*.sh"))


def wps_sam_commands(script: Path) -> list[str]:
    """Each `wps-sam ...` command, continuation lines joined, comments dropped, shell variables made plain words."""
    text = re.sub(r"\\\n", " ", script.read_text())
    commands = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("wps-sam "):
            # a variable standing alone ($FLAGS, ${FLAGS:-}, "$@") expands to any arguments: left out
            line = re.sub(r"(?<=\s)(\$\{?\w+(?::[^}]*)?\}?|\"\$@\")(?=\s|$)", "", line)
            line = re.sub(r"\$\{?(\w+)[^}\s\"]*\}?", r"\1", line)  # $out/x, ${1:?root} -> out/x, 1
            commands.append(line)
    return commands


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_wps_sam_command_of_the_script_parses(script):
    commands = wps_sam_commands(script)
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command)[1:]
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{script.name}: `{command}` does not parse")


def test_the_scripts_do_run_wps_sam():
    assert sum(len(wps_sam_commands(s)) for s in SCRIPTS) >= 5
