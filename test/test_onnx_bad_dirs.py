"""A bad ONNX folder for backend onnxruntime is one WpsSamError line naming the file (README "Bad inputs"):
missing or foreign folder/metadata/graph, corrupt graph, an opset newer than onnxruntime, graphs of another
model (mixed exports, another SAM size, another prompter), bad providers; the CLI prints it as one line."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from wps_sam_core.cli import main
from wps_sam_core.errors import WpsSamError
from wps_sam_core.segmenter import load_segmenter

from conftest import TEST_CLASSES, make_tiny_model, tiny_prompter_config

onnx = pytest.importorskip("onnx", reason="the `export` extra (onnx, onnxruntime) is not installed")
pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxruntime) is not installed")


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory, tiny_files):
    sam_path, prompter_path = tiny_files
    out = tmp_path_factory.mktemp("onnx_good") / "model"
    assert main(["export", "--onnx", str(out), "--prompter", str(prompter_path), "--sam-checkpoint", str(sam_path)]) == 0
    return out


@pytest.fixture(scope="module")
def four_class_prompter(tmp_path_factory):
    """prompter.onnx of a 4-class prompter on the same tiny SAM: what a mixed-up folder holds."""
    from wps_sam_core.export import export_onnx
    from wps_sam_core.modeling.wpssam import WPSSAM

    model = WPSSAM.create(make_tiny_model().sam, tiny_prompter_config(num_classes=4)).eval()
    out = tmp_path_factory.mktemp("onnx_other") / "model"
    return export_onnx(model, TEST_CLASSES + ["car_body"], out, sam_type="tiny", include_encoder=False).files["prompter"]


def _remove(d: Path, name: str) -> None:
    (d / name).unlink()


def _write(d: Path, name: str, text: str) -> None:
    (d / name).write_text(text)


def _edit_meta(d: Path, **changes) -> None:
    meta = json.loads((d / "export.json").read_text())
    meta.update(changes)
    (d / "export.json").write_text(json.dumps(meta))


def _truncate(d: Path, name: str) -> None:
    data = (d / name).read_bytes()
    (d / name).write_bytes(data[: len(data) // 3])


def _opset(d: Path, name: str, version: int) -> None:
    model = onnx.load(str(d / name))
    model.opset_import[0].version = version
    onnx.save(model, str(d / name))


# case id -> (damage(folder, four_class_prompter_path), file named in the message, words of the message)
CASES = {
    "missing-folder": (lambda d, o: shutil.rmtree(d), "", "not found; make one with: wps-sam export --onnx"),
    "file-not-folder": (lambda d, o: (shutil.rmtree(d), d.write_text("x")), "", "not a folder"),
    "no-export-json": (lambda d, o: _remove(d, "export.json"), "export.json", "missing; not a folder written by"),
    "export-json-not-json": (lambda d, o: _write(d, "export.json", "{oops"), "export.json", "not valid JSON"),
    "export-json-foreign": (lambda d, o: _write(d, "export.json", '{"format": "other"}'), "export.json",
                            "not the metadata of wps-sam export --onnx"),
    "format-version-newer": (lambda d, o: _edit_meta(d, format_version=9), "export.json", "format_version 9 is newer"),
    "exported-without-encoder": (lambda d, o: _edit_meta(d, files={"prompter": "prompter.onnx",
                                                                   "mask_decoder": "mask_decoder.onnx"}),
                                 "export.json", "no image_encoder graph (exported with --no-encoder?)"),
    "missing-graph": (lambda d, o: _remove(d, "mask_decoder.onnx"), "mask_decoder.onnx", "missing (export.json lists it)"),
    "corrupt-graph": (lambda d, o: _truncate(d, "prompter.onnx"), "prompter.onnx",
                      "not a valid ONNX file (truncated or corrupt)"),
    "opset-too-new": (lambda d, o: _opset(d, "mask_decoder.onnx", 99), "mask_decoder.onnx",
                      "opset 99 is newer than onnxruntime"),
    "graph-of-another-class-count": (lambda d, o: shutil.copy(o, d / "prompter.onnx"), "prompter.onnx",
                                     "graph of another model (shape [5]), export.json says 3 part classes"),
    "object-classes-of-another-model": (lambda d, o: _edit_meta(d, object_classes=["mug"]), "export.json",
                                        "object_classes must list one object class per part class (3)"),
    "graphs-of-another-sam-size": (lambda d, o: _edit_meta(d, image_size=1024, sam_type="vit_b"), "image_encoder.onnx",
                                   "graph of another model (shape [3, 256, 256]), export.json says 1024-px images"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_onnx_folder_is_one_line_naming_the_file(good_dir, four_class_prompter, tmp_path, case):
    damage, name, words = case
    folder = tmp_path / "model"
    shutil.copytree(good_dir, folder)
    damage(folder, four_class_prompter)
    with pytest.raises(WpsSamError) as err:
        load_segmenter(backend="onnxruntime", onnx_dir=folder, onnx_providers="cpu")
    message = str(err.value)
    assert "\n" not in message and words in message, message
    assert str(folder / name) in message, message


def test_graphs_of_another_prompter_are_refused(good_dir, tiny_files):
    """onnx_dir + a prompter: the folder must hold that prompter's model (classes, SAM type)."""
    from wps_sam_core.embedded import EMBEDDED_PROMPTER

    with pytest.raises(WpsSamError, match=r"export.json: graphs for 3 part classes .* but the prompter .* has 13"):
        load_segmenter(EMBEDDED_PROMPTER, sam_checkpoint="random", backend="onnxruntime", onnx_dir=good_dir)
    _, prompter_path = tiny_files
    with pytest.raises(WpsSamError, match="export.json: graphs for SAM tiny, but the prompter .* runs on SAM vit_b"):
        load_segmenter(prompter_path, "vit_b", sam_checkpoint="random", backend="onnxruntime", onnx_dir=good_dir)
    with pytest.raises(WpsSamError, match="graphs for SAM tiny, not vit_b"):
        load_segmenter(None, "vit_b", backend="onnxruntime", onnx_dir=good_dir)


def test_cli_prints_one_line_for_a_bad_onnx_dir_and_bad_providers(good_dir, tmp_path, capsys):
    image = tmp_path / "frame.png"
    from PIL import Image

    Image.new("RGB", (40, 30)).save(image)
    for flags, words in ((["--onnx-dir", str(tmp_path / "nowhere")], "nowhere: not found"),
                         (["--onnx-dir", str(good_dir), "--onnx-providers", "gpu"], "unknown execution provider 'gpu'")):
        code = main(["predict", str(image), "--out", str(tmp_path / "out"), "--backend", "onnxruntime", *flags])
        err = capsys.readouterr().err
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("leftover", ["folder", "file"])
def test_cache_entry_without_export_json_is_refused_and_kept(tiny_files, tmp_path, monkeypatch, leftover):
    """The cache folder of the model exists without export.json (a partial copy, a clean-up): one line naming
    it, before any export, and nothing in it deleted (it may hold someone's files)."""
    from wps_sam_core.backends.onnx_loading import model_key
    from wps_sam_core.export import DEFAULT_OPSET

    sam_path, prompter_path = tiny_files
    monkeypatch.setenv("WPS_SAM_CACHE_DIR", str(tmp_path / "cache"))
    key = model_key(load_segmenter(prompter_path, sam_checkpoint=sam_path, device="cpu"), DEFAULT_OPSET, False)
    target = tmp_path / "cache" / "onnx" / key
    target.parent.mkdir(parents=True)
    if leftover == "folder":
        target.mkdir()
        (target / "prompter.onnx").write_bytes(b"someone's file")
    else:
        target.write_bytes(b"someone's file")
    with pytest.raises(WpsSamError, match=rf"^ONNX cache {re.escape(str(target))}: exists without export.json "
                                          r".*; delete it to export the model again, or pass onnx_dir$"):
        load_segmenter(prompter_path, sam_checkpoint=sam_path, backend="onnxruntime")
    assert [p.name for p in target.parent.iterdir()] == [key]  # no temporary export left beside it
    kept = target / "prompter.onnx" if leftover == "folder" else target
    assert kept.read_bytes() == b"someone's file"
