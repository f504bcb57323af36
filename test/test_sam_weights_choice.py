"""Which SAM weights a prompter runs on: a SAM checkpoint is required ("random" only when named), and a SAM
file other than the one the prompter was trained on (its recorded sha256) is refused unless allowed.

Everywhere a prompter meets a SAM: the core factory, `wps-sam predict/eval/export/bag`, the node parameters.
(`wps-sam cache` and `wps-sam train` refuse a missing SAM checkpoint the same way: test_cache.py, test_train.py.)
"""
from __future__ import annotations

import logging
import re

import pytest
from safetensors.torch import save_file

from wps_sam_core.checkpoint import load_prompter_checkpoint, save_prompter_checkpoint
from wps_sam_core.cli import main
from wps_sam_core.errors import WpsSamError
from wps_sam_core.image_io import write_png
from wps_sam_core.io_utils import sha256_file
from wps_sam_core.segmenter import PartSegmenter, load_segmenter
from wps_sam_ros import topics
from wps_sam_ros.core import load_segmenter as node_load_segmenter

from conftest import make_tiny_model, random_image

NO_SAM = "no SAM checkpoint: pass --sam-checkpoint PATH (an official SAM checkpoint), or --sam-checkpoint random"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_files):
    """tiny_files plus: a prompter that records its SAM's sha256, another tiny SAM file, an image, a dataset."""
    from wps_sam_core.data.world import write_world

    sam_path, prompter_path = tiny_files
    root = tmp_path_factory.mktemp("sam_choice")
    ckpt = load_prompter_checkpoint(prompter_path)
    ckpt.sam_checkpoint_sha256 = sha256_file(sam_path)
    bound = save_prompter_checkpoint(root / "bound_prompter.safetensors", ckpt)
    other_sam = root / "other_sam.safetensors"
    save_file({k: v.contiguous() for k, v in make_tiny_model(seed=5).sam.state_dict().items()}, str(other_sam))
    write_png(root / "a.png", random_image(48, 64))
    write_world(root / "world", 2, 1, 64, "val")
    return {"sam": sam_path, "prompter": prompter_path, "bound": bound, "other_sam": other_sam, "root": root}


def command(name: str, files: dict, out: str) -> list[str]:
    """`wps-sam NAME` writing to ROOT/OUT (a new folder per test)."""
    root = files["root"]
    return {
        "predict": ["predict", str(root / "a.png"), "--out", str(root / out)],
        "eval": ["eval", "--data", str(root / "world"), "--json", str(root / out / "r.json"), "--no-progress"],
        "export": ["export", "--onnx", str(root / out)],
        "bag": ["bag", str(root / "world"), str(root / out), "--image-topic", "/camera/image_raw"],
    }[name] + ["--device", "cpu"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


# ---- random weights only when asked for by name ------------------------------------------------------------
@pytest.mark.parametrize("name", ["predict", "eval", "export", "bag"])
def test_cli_needs_a_sam_checkpoint_with_a_prompter(files, capsys, name):
    assert main(command(name, files, f"no_sam_{name}") + ["--prompter", str(files["prompter"])]) == 2
    assert f"wps-sam {name}: error: {NO_SAM}" in error_line(capsys)
    assert not (files["root"] / f"no_sam_{name}").exists()  # nothing written


def test_cli_random_sam_weights_when_named(files, capsys):
    argv = command("predict", files, "random") + ["--prompter", str(files["prompter"]), "--sam-checkpoint", "random"]
    assert main(argv) == 0
    assert "on SAM tiny (random weights)" in (files["root"] / "random" / "a_parts.json").read_text()


@pytest.mark.parametrize("sam_checkpoint", [None, ""])
def test_core_factory_needs_a_sam_checkpoint(files, sam_checkpoint):
    with pytest.raises(WpsSamError, match=re.escape(NO_SAM)):
        load_segmenter(str(files["prompter"]), None, sam_checkpoint, "cpu")
    with pytest.raises(WpsSamError, match=re.escape(NO_SAM)):
        PartSegmenter.from_checkpoints(files["prompter"], sam_checkpoint=sam_checkpoint, device="cpu")
    assert load_segmenter(str(files["prompter"]), None, "random", "cpu").description.endswith("(random weights)")


def test_node_parameters_need_sam_checkpoint_with_a_prompter(files):
    params = {**topics.defaults(), "device": "cpu", "prompter_checkpoint": str(files["prompter"])}
    with pytest.raises(WpsSamError, match="no SAM checkpoint: pass sam_checkpoint PATH .* or sam_checkpoint random"):
        node_load_segmenter(params)
    assert node_load_segmenter({**params, "sam_checkpoint": "random"}).description.endswith("(random weights)")
    assert node_load_segmenter({**params, "prompter_checkpoint": ""}).caveat  # no prompter: the embedded model


# ---- the SAM the prompter was trained on ---------------------------------------------------------------------
def test_cli_refuses_a_prompter_on_other_sam_weights(files, capsys, caplog):
    short = sha256_file(files["sam"])[:12], sha256_file(files["other_sam"])[:12]
    argv = command("predict", files, "mismatch") + ["--prompter", str(files["bound"]), "--sam-checkpoint",
                                                    str(files["other_sam"])]
    assert main(argv) == 2
    line = error_line(capsys)
    assert (f"prompter {files['bound']} was trained on the SAM checkpoint with sha256 {short[0]}, but "
            f"{files['other_sam']} has sha256 {short[1]}") in line
    assert "--allow-sam-mismatch to run it anyway" in line
    assert not (files["root"] / "mismatch").exists()

    assert main(argv + ["--allow-sam-mismatch"]) == 0
    assert "has sha256" in caplog.text and "running anyway (SAM mismatch allowed)" in caplog.text
    assert main(command("predict", files, "own_sam") + ["--prompter", str(files["bound"]), "--sam-checkpoint",
                                                        str(files["sam"])]) == 0  # its own SAM


def test_core_and_node_refuse_a_prompter_on_other_sam_weights(files):
    with pytest.raises(WpsSamError, match="was trained on the SAM checkpoint with sha256"):
        PartSegmenter.from_checkpoints(files["bound"], sam_checkpoint=files["other_sam"], device="cpu")
    with pytest.raises(WpsSamError, match="but random SAM weights were asked for"):
        PartSegmenter.from_checkpoints(files["bound"], sam_checkpoint="random", device="cpu")
    PartSegmenter.from_checkpoints(files["bound"], sam_checkpoint=files["other_sam"], device="cpu",
                                   allow_sam_mismatch=True)
    params = {**topics.defaults(), "device": "cpu", "prompter_checkpoint": str(files["bound"]),
              "sam_checkpoint": str(files["other_sam"])}
    with pytest.raises(WpsSamError, match=r"has sha256 [0-9a-f]{12}; pass the SAM checkpoint it was trained with$"):
        node_load_segmenter(params)  # no override offered: the node has no such parameter


def test_prompter_without_a_recorded_sam_hash_warns_on_a_real_sam(files, caplog):
    with caplog.at_level(logging.WARNING, logger="wps_sam_core.checkpoint"):
        PartSegmenter.from_checkpoints(files["prompter"], sam_checkpoint=files["sam"], device="cpu")
    assert "records no SAM checkpoint hash (trained on random or unknown SAM weights)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wps_sam_core.checkpoint"):
        PartSegmenter.from_checkpoints(files["bound"], sam_checkpoint=files["sam"], device="cpu")
    assert caplog.text == ""
