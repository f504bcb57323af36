"""The shipped default model: files, card, the reported metric on a fixed world sample, CLI with no model args."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wps_sam_core.embedded import (
    EMBEDDED_METADATA, EMBEDDED_PROMPTER, EMBEDDED_SAM_WEIGHTS, embedded_metadata, load_embedded_segmenter,
)
from wps_sam_core.io_utils import sha256_file

REPO = Path(__file__).resolve().parents[1]
MARGIN = 0.01  # 1 mIoU point: batch composition and BLAS threads change the last digits of the logits
MAX_TOTAL_BYTES = 10 * 1000 * 1000


@pytest.fixture(scope="module")
def card() -> dict:
    assert EMBEDDED_SAM_WEIGHTS.is_file() and EMBEDDED_PROMPTER.is_file() and EMBEDDED_METADATA.is_file()
    return embedded_metadata()


@pytest.fixture(scope="module")
def segmenter():
    torch.set_num_threads(2)
    return load_embedded_segmenter(device="cpu")


def test_card_describes_the_shipped_files(card):
    assert card["sam"]["sha256"] == sha256_file(EMBEDDED_SAM_WEIGHTS)
    assert card["prompter"]["sha256"] == sha256_file(EMBEDDED_PROMPTER)
    total = EMBEDDED_SAM_WEIGHTS.stat().st_size + EMBEDDED_PROMPTER.stat().st_size
    assert total == card["sizes_bytes"]["total"] <= MAX_TOTAL_BYTES
    assert card["prompter"]["supervision"] == "box"
    rows = card["metrics"]["rows"]
    assert len(rows) == 4 and all(np.isfinite(r["mIoU"]) and np.isfinite(r["paper_mIoU"]) for r in rows.values())


def test_weights_are_float32_in_memory(segmenter):
    # stored as float16 to halve the package; the loaders copy them into float32 modules
    assert all(p.dtype == torch.float32 for p in segmenter.model.parameters())


def test_reported_metric_holds_on_the_fixed_world_sample(tmp_path, card, segmenter):
    from wps_sam_core.data.coco import CocoPartDataset
    from wps_sam_core.data.world import write_world
    from wps_sam_core.evaluation.evaluate import evaluate

    check = card["regression_check"]
    write_world(tmp_path, check["images"], check["world_seed"], 256, check["split"])  # the same images again
    dataset = CocoPartDataset.from_root(tmp_path, check["split"])
    result = evaluate(segmenter, dataset, ["gt_boxes", "prompter"], progress=False)
    measured = {m: result.metrics[m].compute()["mIoU"] for m in ("gt_boxes", "prompter")}
    for method, reported in check["mIoU"].items():
        assert measured[method] >= reported - MARGIN, (method, measured[method], reported)


def test_predict_cli_uses_the_embedded_model(tmp_path):
    image = sorted((REPO / "examples").glob("*.png"))[0]
    proc = subprocess.run([sys.executable, "-m", "wps_sam_core.cli", "predict", str(image), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert sum("using embedded default model" in line for line in proc.stderr.splitlines()) == 1
    parts = json.loads((tmp_path / f"{image.stem}_parts.json").read_text())
    assert parts["instances"], "the embedded model found no part in its own example image"
    assert (tmp_path / f"{image.stem}_overlay.png").is_file()


def test_dedup_makes_the_demos_hammer_head_copies_one(tmp_path, card, segmenter):
    """examples/world_test_000001.png (test image 1 of the card's world): with dedup off the embedded model
    gives four hammer_head instances: one on the hammer's head and three copies on one green clutter
    rectangle (two halves and the whole). The default dedup_iou makes the three one; the head keeps its
    instance and its label-map pixels."""
    from wps_sam_core.data.coco import CocoPartDataset
    from wps_sam_core.data.world import write_world
    from wps_sam_core.image_io import read_image_rgb
    from wps_sam_core.segmenter import SegmenterSettings

    check = card["regression_check"]
    write_world(tmp_path, 2, check["world_seed"], 256, check["split"])
    sample = CocoPartDataset.from_root(tmp_path, check["split"])[1]
    image = read_image_rgb(REPO / "examples" / "world_test_000001.png")
    assert np.array_equal(image, sample.image)  # the example is that world image
    head_id = segmenter.class_names.index("hammer_head") + 1
    head = sample.masks[list(sample.labels).index(head_id)]

    def hammer_heads(dedup_iou):
        segmenter.update_settings(dedup_iou=dedup_iou)
        result = segmenter.segment(image)
        return result, [inst for inst in result.instances if inst.class_id == head_id]

    try:
        off, off_heads = hammer_heads(0.0)
        on, on_heads = hammer_heads(SegmenterSettings().dedup_iou)
    finally:
        segmenter.update_settings(dedup_iou=SegmenterSettings().dedup_iou)
    assert len(off_heads) == 4 and len(on_heads) == 2
    on_the_head = [inst for inst in on_heads if (inst.mask & head).sum() > 0.5 * inst.mask.sum()]
    assert len(on_the_head) == 1
    others = [inst for inst in on_heads if inst.instance_id != on_the_head[0].instance_id]
    assert len(others) == 1 and not (others[0].mask & head).any()  # the copy on the clutter, off the head
    covered_off, covered_on = (off.labels[head] == head_id).mean(), (on.labels[head] == head_id).mean()
    assert covered_on >= covered_off - 0.01 and covered_on > 0.6, (covered_off, covered_on)


def test_object_classes_go_through_the_constructor_check(segmenter):
    from wps_sam_core.embedded import embedded_object_classes
    from wps_sam_core.errors import WpsSamError
    from wps_sam_core.segmenter import PartSegmenter

    assert segmenter.object_classes == embedded_object_classes()  # the card's table, passed at construction
    with pytest.raises(WpsSamError, match=rf"^1 object classes for {len(segmenter.class_names)} part classes$"):
        PartSegmenter.from_checkpoints(EMBEDDED_PROMPTER, "tiny", EMBEDDED_SAM_WEIGHTS, device="cpu",
                                       object_classes=("hammer",))
