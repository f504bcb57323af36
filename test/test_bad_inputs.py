"""The bad-input catalogue (README.md, "Bad inputs"): every kind gets one clear line naming the problem.

CLI: `wps-sam` and `part_seg_node` exit 2 with one `error:` line and no traceback. The cases run as
real processes: one interpreter imports the CLI once, then forks one child per case, each running the
console-script `main(argv)` with its own stderr (a fresh interpreter per case would cost ~10 s of
imports each). Node: a bad frame is rejected by name, counted, warned about (throttled), and the next
frame is processed — through PartSegCore here and through the live DDS node in the short soak.
Checkpoint/COCO rows already tested elsewhere are named in the table; the last test checks that
every row of the table names a test that exists.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from wps_sam_core.distill.trainer import STATE_FILE
from wps_sam_core.errors import WpsSamError
from wps_sam_ros import topics
from wps_sam_ros.core import PartSegCore, load_segmenter
from wps_sam_ros.messages import MessageFactory, RosbagsBackend

from conftest import TINY_PROMPTER_YAML, random_image

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "README.md"  # the catalogue table lives in the README


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ---- CLI: one forked child per case ----------------------------------------------------------------------
FORK_RUNNER = r"""
import json, os, sys, traceback
from wps_sam_core.cli import build_parser, main as wps_sam
from wps_sam_ros.node import main as part_seg_node
import wps_sam_ros.dds, wps_sam_ros.core, wps_sam_core.segmenter  # imported once, before forking
build_parser()
entries = {"wps-sam": wps_sam, "part_seg_node": part_seg_node}
cases, out_dir = json.loads(sys.stdin.read()), sys.argv[1]
results = {}
for case_id, (entry, argv) in cases.items():
    err_path = os.path.join(out_dir, case_id + ".err")
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child is the command: exit status and stderr are its own
        os.dup2(os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        code = 1
        try:
            code = entries[entry](argv)
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()  # what the interpreter prints for an uncaught exception
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results[case_id] = {"rc": os.waitstatus_to_exitcode(status), "stderr": open(err_path).read()}
print(json.dumps(results))
"""


def evil_pickle(path: Path, marker: Path) -> Path:
    """A .pth whose unpickling would run `touch marker` (weights_only loading must refuse it)."""
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)
    torch.save({"image_encoder.pos_embed": Payload()}, path)
    return path


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def cli_cases(tmp: Path, tiny_files, world: Path) -> dict[str, tuple[str, list[str], str]]:
    """case id -> (entry point, argv, fragment the one error line must contain)."""
    sam_path, prompter_path = tiny_files
    (tmp / "run").mkdir()
    evil_pickle(tmp / "run" / STATE_FILE, tmp / "PWNED")
    train_config = yaml.safe_dump({
        "data": {"root": str(world), "train_split": "train", "supervision": "box"},
        "model": {"sam_type": "tiny", "sam_checkpoint": str(sam_path), "prompter": TINY_PROMPTER_YAML},
        "optim": {"batch_size": 2, "max_steps": 2}, "run": {"out_dir": str(tmp / "run"), "accelerator": "cpu"}})
    model = ["--prompter", str(prompter_path), "--sam-checkpoint", str(sam_path), "--device", "cpu"]
    files = {
        "empty.png": b"",
        "truncated.png": png_bytes(random_image(64, 64))[:3000],
        "deep16.png": png_bytes(np.full((20, 30), 40000, np.uint16)),
        "elongated.png": png_bytes(np.zeros((10, 20000, 3), np.uint8)),
        "corrupt.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}" + b"\x00" * 64,
        "bad_types.yaml": b"part_seg:\n  ros__parameters:\n    score_threshold: high\n",
        "list.yaml": b"- score_threshold\n- 0.5\n",
        "train.yaml": train_config.encode(),
        "coco.json": json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}],
                                 "annotations": [{"id": 7, "image_id": 1, "bbox": [0, 0, 2, 2]}],
                                 "categories": [{"id": 1, "name": "body"}]}).encode(),
    }
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    (tmp / "a.png").write_bytes(png_bytes(random_image(4, 4)))
    (tmp / "folder.png").mkdir()
    evil_pickle(tmp / "evil.pth", tmp / "PWNED")
    out = ["--out", str(tmp / "out")]
    node = ["--transport", "dds", "--ros-args", "-p", "device:=cpu"]
    return {
        "empty-image": ("wps-sam", ["predict", str(tmp / "empty.png"), *out, *model], "image file is empty"),
        "truncated-image": ("wps-sam", ["predict", str(tmp / "truncated.png"), *out, *model],
                            "cannot decode image (truncated or not an image)"),
        "16-bit-image": ("wps-sam", ["predict", str(tmp / "deep16.png"), *out, *model], "uint16 image (16-bit)"),
        "elongated-image": ("wps-sam", ["predict", str(tmp / "elongated.png"), *out, *model], "too elongated"),
        "directory-as-image": ("wps-sam", ["predict", str(tmp / "folder.png"), *out, *model], "is a directory"),
        "missing-sam-checkpoint": ("wps-sam", ["predict", str(tmp / "a.png"), *out, *model[:2], "--sam-checkpoint",
                                               str(tmp / "nope.pth")], "checkpoint not found"),
        "corrupt-prompter": ("wps-sam", ["predict", str(tmp / "a.png"), *out, "--prompter",
                                         str(tmp / "corrupt.safetensors")], "corrupt or truncated prompter checkpoint"),
        "pickle-with-code": ("wps-sam", ["predict", str(tmp / "a.png"), *out, "--prompter", str(prompter_path),
                                         "--sam-checkpoint", str(tmp / "evil.pth")], "refusing to load"),
        "other-sam-type": ("wps-sam", ["predict", str(tmp / "a.png"), *out, *model, "--sam-type", "vit_b"],
                           "trained on SAM type 'tiny', not 'vit_b'"),
        "score-threshold-2": ("wps-sam", ["predict", str(tmp / "a.png"), *out, *model, "--score-threshold", "2"],
                              "score_threshold must be in [0, 1], got 2.0"),
        "max-instances-0": ("wps-sam", ["predict", str(tmp / "a.png"), *out, *model, "--max-instances", "0"],
                            "max_instances must be in [1, 65535], got 0"),
        "dedup-iou-2": ("wps-sam", ["predict", str(tmp / "a.png"), *out, *model, "--dedup-iou", "2"],
                        "dedup_iou must be in [0, 1] (0 = off), got 2.0"),
        "flag-not-a-number": ("wps-sam", ["predict", str(tmp / "a.png"), *out, "--score-threshold", "high"],
                              "invalid float value: 'high'"),
        "train-state-with-code": ("wps-sam", ["train", "--config", str(tmp / "train.yaml"), "--resume"],
                                  f"--resume: refusing to load {tmp / 'run' / STATE_FILE}"),
        "coco-missing-keys": ("wps-sam", ["dataset-info", "--annotations", str(tmp / "coco.json"), "--image-dir",
                                          str(tmp)], "annotation id 7: needs integer 'id', 'image_id' and 'category_id'"),
        "params-yaml-wrong-type": ("part_seg_node", [*node, "--params-file", str(tmp / "bad_types.yaml")],
                                   "parameter score_threshold: expected float, got 'high'"),
        "params-yaml-not-a-mapping": ("part_seg_node", [*node, "--params-file", str(tmp / "list.yaml")],
                                      "expected a mapping of node names to ros__parameters, got a list"),
        "node-score-threshold-2": ("part_seg_node", [*node, "-p", f"prompter_checkpoint:={prompter_path}",
                                                     "-p", "score_threshold:=2"], "score_threshold must be in [0, 1]"),
        "node-param-not-yaml": ("part_seg_node", [*node, "-p", f"prompter_checkpoint:=`touch {tmp / 'PWNED'}`"],
                                "the value is not valid YAML; quote it"),
        "node-shell-in-path": ("part_seg_node", [*node, "-p", f"prompter_checkpoint:=$(touch {tmp / 'PWNED'})"],
                               f"prompter checkpoint not found: $(touch {tmp / 'PWNED'})"),
    }


CLI_CASE_IDS = ["empty-image", "truncated-image", "16-bit-image", "elongated-image", "directory-as-image",
                "missing-sam-checkpoint", "corrupt-prompter", "pickle-with-code", "other-sam-type",
                "score-threshold-2", "max-instances-0", "dedup-iou-2", "flag-not-a-number", "train-state-with-code",
                "coco-missing-keys", "params-yaml-wrong-type", "params-yaml-not-a-mapping", "node-score-threshold-2",
                "node-param-not-yaml", "node-shell-in-path"]


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory, tiny_files, small_world):
    tmp = tmp_path_factory.mktemp("cli_cases")
    cases = cli_cases(tmp, tiny_files, small_world)
    assert sorted(cases) == sorted(CLI_CASE_IDS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", FORK_RUNNER, str(tmp)], input=json.dumps(
        {k: (entry, argv) for k, (entry, argv, _) in cases.items()}), capture_output=True, text=True, env=env,
        timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return cases, results, tmp


@pytest.mark.parametrize("case", CLI_CASE_IDS)
def test_cli_user_error(cli_results, case):
    cases, results, tmp = cli_results
    _, _, fragment = cases[case]
    rc, stderr = results[case]["rc"], results[case]["stderr"]
    assert rc == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and fragment in errors[0], stderr
    assert not (tmp / "PWNED").exists()  # neither the pickle nor the shell-looking path ran anything
    assert not (tmp / "out").exists() or not any((tmp / "out").iterdir())  # no partial outputs


# ---- paths from parameters are literal paths ---------------------------------------------------------------
@pytest.mark.parametrize("key", ["prompter_checkpoint", "sam_checkpoint"])
def test_shell_looking_paths_are_literal(tmp_path, tiny_files, key):
    sam_path, prompter_path = tiny_files
    marker = tmp_path / "PWNED"
    for payload in (f"$(touch {marker})", f"`touch {marker}`", "~/x.safetensors", "${HOME}/x.safetensors",
                    f"x.pth; touch {marker}"):
        params = {**topics.defaults(), "device": "cpu", "prompter_checkpoint": str(prompter_path),
                  "sam_checkpoint": str(sam_path), key: payload}
        with pytest.raises(WpsSamError, match="not found") as err:
            load_segmenter(params)
        assert payload in str(err.value)  # named verbatim: no ~, $VAR or $(...) expansion
    assert not marker.exists()


def unsafe_calls(source: str) -> list[str]:
    """Calls that could run code from a file or hand a path to a shell, found in the syntax tree."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if name == "torch.load" and keywords.get("weights_only") != "True":
            found.append(f"line {node.lineno}: torch.load without weights_only=True")
        elif name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load", "torch.hub.load", "os.system",
                      "os.popen", "eval", "exec", "yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            found.append(f"line {node.lineno}: {name}")
        elif name.endswith(("expanduser", "expandvars")):
            found.append(f"line {node.lineno}: {name} (paths are taken literally)")
        elif keywords.get("shell") == "True" or (name.endswith("load") and keywords.get("allow_pickle") == "True"):
            found.append(f"line {node.lineno}: {name} with shell=True/allow_pickle=True")
    return found


def test_no_unpickling_or_shell_in_the_code_base():
    probe = "torch.load(p)\nyaml.load(s)\nsubprocess.run(c, shell=True)\nPath(p).expanduser()\ntorch.load(p, weights_only=True)"
    assert [f.split(":")[0] for f in unsafe_calls(probe)] == ["line 1", "line 2", "line 3", "line 4"]  # the scanner works
    folders = ("wps_sam_core", "wps_sam_ros", "training", "benchmarks", "launch", "examples")
    files = [p for folder in folders for p in (REPO / folder).rglob("*.py")] + [REPO / "setup.py"]
    assert len(files) > 30
    problems = {str(p.relative_to(REPO)): unsafe_calls(p.read_text()) for p in files}
    assert {path: found for path, found in problems.items() if found} == {}


# ---- the node: bad frames through PartSegCore -------------------------------------------------------------
FACTORY = MessageFactory(RosbagsBackend())


def good_frame(seed: int = 0, h: int = 24, w: int = 32, stamp: int = 1_000):
    return FACTORY.image(FACTORY.header(stamp, "cam"), random_image(h, w, seed), "rgb8")


def float_frame(value: float):
    msg = good_frame()
    msg.encoding, msg.step = "32FC1", msg.width * 4
    msg.data = np.full((msg.height, msg.width), value, np.float32).view(np.uint8).reshape(-1)
    return msg


def changed(msg, **fields):
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


FRAME_CASES = {  # id -> (bad message factory, fragment of the warning)
    "32FC1-nan": (lambda: float_frame(np.nan), "unsupported image encoding '32FC1'"),
    "32FC1-inf": (lambda: float_frame(np.inf), "unsupported image encoding '32FC1'"),
    "unknown-encoding": (lambda: changed(good_frame(), encoding="yuv422_yuy2"), "unsupported image encoding"),
    "wrong-step": (lambda: changed(good_frame(), step=50), "step 50 < width 32 x 3 bytes per pixel"),
    "short-data": (lambda: changed(good_frame(), data=np.zeros(100, np.uint8)), "data length 100 != step 96"),
    "no-pixels": (lambda: changed(good_frame(), height=0, data=np.zeros(0, np.uint8)), "image has no pixels"),
    "elongated-20000x10": (lambda: FACTORY.image(FACTORY.header(5), np.zeros((10, 20000), np.uint8), "mono8"),
                           "too elongated"),
    "compressed-garbage": (lambda: FACTORY.compressed_image(FACTORY.header(5), "jpeg", b"\xff\xd8 not a jpeg"),
                           "could not decode"),
    "compressed-format": (lambda: FACTORY.compressed_image(FACTORY.header(5), "tiff", b"II*\x00"),
                          "unsupported compressed format 'tiff'"),
}


@pytest.fixture(scope="module")
def segmenter(tiny_files):
    sam_path, prompter_path = tiny_files
    return load_segmenter({**topics.defaults(), "prompter_checkpoint": str(prompter_path),
                           "sam_checkpoint": str(sam_path), "device": "cpu", "score_threshold": 0.0})


def make_core(segmenter, warnings, published=None):
    publish = (lambda k, m: published.append((k, m))) if published is not None else (lambda k, m: None)
    return PartSegCore(segmenter, FACTORY, publish, warn=warnings.append, publish_overlay=False)


@pytest.mark.parametrize("case", sorted(FRAME_CASES))
def test_node_rejects_bad_frame_and_processes_the_next(segmenter, case):
    make_bad, fragment = FRAME_CASES[case]
    warnings: list[str] = []
    core = make_core(segmenter, warnings)
    assert core.process(make_bad()) is None
    assert core.stats.rejected == 1 and core.stats.processed == 0
    (warning,) = warnings
    assert warning.startswith("rejected frame: ") and fragment in warning and "\n" not in warning
    out = core.process(good_frame(1, stamp=2_000))
    assert out is not None and out["masks"].header.stamp.nanosec == 2_000
    assert core.stats.processed == 1 and not core.stats.last_was_rejected


def test_tiny_and_1x1_frames_are_segmented(segmenter):
    core = make_core(segmenter, warnings := [])
    for h, w in ((1, 1), (1, 7), (3, 2)):
        out = core.process(good_frame(h=h, w=w))
        assert (out["masks"].height, out["masks"].width) == (h, w)
    assert core.stats.processed == 3 and not warnings


def test_live_worker_throttles_warnings_and_keeps_going(segmenter):
    """20 bad frames in a row through the worker thread: one warning line, 20 counted, then good output."""
    warnings: list[str] = []
    published: list = []
    core = make_core(segmenter, warnings, published)
    makers = [FRAME_CASES[k][0] for k in sorted(FRAME_CASES)]
    core.start()
    try:
        for i in range(20):
            core.submit(makers[i % len(makers)]())
            deadline = time.monotonic() + 10
            while core.stats.rejected + core.stats.dropped < i + 1 and time.monotonic() < deadline:
                time.sleep(0.002)
        core.submit(good_frame(3, stamp=9_000))
        deadline = time.monotonic() + 30
        while not published and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        core.stop()
    s = core.stats
    assert s.received == 21 and s.processed == 1 and s.received == s.processed + s.dropped + s.rejected
    assert s.rejected >= 15 and len(warnings) == 1  # the rest are throttled (one per 5 s)
    assert {k for k, _ in published} == {"masks", "instance_masks", "instances", "object_masks", "objects"}


class FailsOnce:
    """The real segmenter, except that its first frame raises like a device error would."""

    def __init__(self, segmenter) -> None:
        self._segmenter, self.failed = segmenter, False

    def __getattr__(self, name):
        return getattr(self._segmenter, name)

    def segment(self, image):
        if not self.failed:
            self.failed = True
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self._segmenter.segment(image)


def test_worker_survives_a_failing_frame_and_counts_it(segmenter):
    warnings: list[str] = []
    published: list = []
    core = PartSegCore(FailsOnce(segmenter), FACTORY, lambda k, m: published.append(k), warn=warnings.append,
                       publish_overlay=False)
    core.start()
    try:
        core.submit(good_frame(1))
        deadline = time.monotonic() + 10
        while core.stats.rejected == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        core.submit(good_frame(2))
        while not published and time.monotonic() < deadline + 20:
            time.sleep(0.01)
    finally:
        core.stop()
    assert core.stats.rejected == 1 and core.stats.processed == 1 and core.stats.received == 2
    assert warnings == ["rejected frame: frame failed: RuntimeError: CUDA error: an illegal memory access was encountered"]
    assert "masks" in published


def test_float_arrays_with_nan_are_refused_by_the_segmenter(segmenter):
    for value in (np.nan, np.inf, 0.5):
        with pytest.raises(WpsSamError, match="expected dtype uint8"):
            segmenter.segment(np.full((8, 8, 3), value, np.float32))


@pytest.mark.parametrize("changes, fragment", [
    ({"score_threshold": 2.0}, "score_threshold must be in [0, 1]"),
    ({"score_threshold": "0.3"}, "score_threshold must be a number"),
    ({"mask_threshold": float("inf")}, "mask_threshold must be finite"),
    ({"max_instances": -1}, "max_instances must be in [1, 65535]"),
    ({"max_instances": 2.5}, "max_instances must be an integer"),
    ({"class_filter": "mug_body,nose"}, "unknown classes ['nose']"),
], ids=["score-2", "score-str", "mask-inf", "max-neg", "max-float", "class-unknown"])
def test_node_set_parameters_out_of_range(segmenter, changes, fragment):
    core = make_core(segmenter, warnings := [])
    before = segmenter.settings
    ok, reason = core.set_parameters(changes)
    assert not ok and fragment in reason and "\n" not in reason
    assert segmenter.settings == before  # all or nothing
    assert core.process(good_frame()) is not None and not warnings


# ---- the live DDS node: a short soak with bad frames mixed in ----------------------------------------------
def test_short_dds_soak_with_bad_frames(tiny_files):
    pytest.importorskip("cyclonedds")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from soak_dds import run_soak

    result = run_soak(tiny_files, frames=300, rate_hz=100.0, bad_fraction=0.3, seed=1)
    assert result["unhandled_exceptions"] == 0, result["node_log_tail"]
    assert result["node_exit_code"] == 0
    assert result["accounting_ok"], result
    assert result["rejected"] > 0 and result["processed"] > 0
    assert result["last_good_frame_answered"]


# ---- the README table names a real test for every row -----------------------------------------------------
TABLE_HEADER = "| kind | where | what the user sees | test |"


def table_rows() -> list[list[str]]:
    """The catalogue rows of the README table."""
    text = TABLE.read_text()
    assert TABLE_HEADER in text, "README.md lacks the bad-input catalogue table"
    lines = text[text.index(TABLE_HEADER):].splitlines()[2:]  # after the header and the --- line
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_table_rows_name_existing_tests():
    rows = table_rows()
    assert len(rows) >= 15
    for kind, where, sees, test in rows:
        assert kind and where and sees, kind
        for node_id in re.findall(r"`([^`]+::[^`]+)`", test):
            path, _, name = node_id.partition("::")
            func, _, param = name.partition("[")
            source = (REPO / "test" / path).read_text()
            functions = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
            assert func in functions, f"{kind}: {node_id} names no test"
            assert not param or f'"{param.rstrip("]")}"' in source, f"{kind}: {node_id} names no parameter id"
        assert "::" in test, f"{kind}: no test named"
    named = " ".join(row[3] for row in rows)
    missing = [case for case in CLI_CASE_IDS + sorted(FRAME_CASES) if f"[{case}]" not in named]
    assert not missing, f"cases without a table row: {missing}"
