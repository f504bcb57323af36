"""Evaluation: SAM baselines and the prompter on one shared embedding pass, both protocols, `wps-sam eval`."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from segment_anything import SamPredictor

from wps_sam_core.cli import main as cli_main
from wps_sam_core.data.coco import CocoPartDataset
from wps_sam_core.errors import WpsSamError
from wps_sam_core.evaluation.evaluate import METHOD_NAMES, METHODS, evaluate
from wps_sam_core.evaluation.metrics import SegmentationMetrics
from wps_sam_core.segmenter import InstanceMasks, PartSegmenter, SegmenterSettings, assemble

from conftest import TEST_CLASSES, random_image

CATEGORY_IDS = [11, 12, 17]  # not contiguous: the dataset maps them to labels 1..3
COLORS = [(220, 60, 40), (40, 200, 90), (50, 70, 230)]


def rectangle(h, w, x0, y0, x1, y1):
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def ellipse(h, w, cx, cy, ax, ay):
    canvas = np.zeros((h, w), np.uint8)
    cv2.ellipse(canvas, (cx, cy), (ax, ay), 0, 0, 360, 1, -1)
    return canvas.astype(bool)


def u_shape(h, w, x0, y0, x1, y1, thickness):
    """A concave part whose box centre is outside it (where 'center' and 'interior' clicks differ)."""
    return rectangle(h, w, x0, y0, x1, y1) & ~rectangle(h, w, x0 + thickness, y0, x1 - thickness, y1 - thickness)


def scenes():
    """(height, width, [(class index, mask)]) per image: rectangles, ellipses, a U, one overlap."""
    return [
        (72, 96, [(0, rectangle(72, 96, 10, 12, 50, 60)), (1, ellipse(72, 96, 30, 36, 8, 6)),  # ellipse on the body
                  (2, ellipse(72, 96, 75, 40, 14, 20))]),
        (80, 64, [(1, u_shape(80, 64, 8, 10, 40, 50, 7)), (2, rectangle(80, 64, 44, 55, 62, 78))]),
        (60, 60, [(0, ellipse(60, 60, 30, 30, 20, 12))]),
    ]


def write_dataset(root: Path, split: str = "val", scene_list=None, class_names=TEST_CLASSES) -> tuple[Path, Path]:
    """PartImageNet layout with RLE part masks; images show the parts in colour over noise."""
    image_dir, ann_dir = root / "images" / split, root / "annotations" / split
    image_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    images, annotations = [], []
    for image_id, (h, w, parts) in enumerate(scene_list or scenes(), start=1):
        image = random_image(h, w, seed=image_id) // 3
        for class_index, mask in sorted(parts, key=lambda p: -p[1].sum()):  # draw big first, like the GT
            image[mask] = COLORS[class_index]
        name = f"img_{image_id:03d}.png"
        cv2.imwrite(str(image_dir / name), image[:, :, ::-1])
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for class_index, mask in parts:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 100, "image_id": image_id, "iscrowd": 0,
                                "category_id": CATEGORY_IDS[class_index], "segmentation": rle,
                                "area": int(mask.sum())})
    categories = [{"id": cid, "name": name} for cid, name in zip(CATEGORY_IDS, class_names)]
    ann_file = ann_dir / f"{split}.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann_file, image_dir


@pytest.fixture
def dataset(tmp_path):
    return CocoPartDataset(*write_dataset(tmp_path / "data"))


@pytest.fixture
def segmenter(tiny_model):
    return PartSegmenter(tiny_model, TEST_CLASSES, device="cpu", settings=SegmenterSettings(score_threshold=0.0))


def test_gt_box_baseline_equals_official_sam_predictor(segmenter, dataset):
    result = evaluate(segmenter, dataset, methods=["gt_boxes"], batch_size=2, progress=False)

    reference = SegmentationMetrics(len(TEST_CLASSES), TEST_CLASSES, ignore_index=None)
    predictor = SamPredictor(segmenter.model.sam)
    for i in range(len(dataset)):
        sample = dataset[i]
        predictor.set_image(sample.image)
        masks, ious = [], []
        for box in sample.boxes:
            mask, iou, _ = predictor.predict(box=box, multimask_output=False)
            masks.append(mask[0])
            ious.append(iou[0])
        ious = np.array(ious)
        labels = assemble(np.stack(masks), sample.labels, ious, ious, TEST_CLASSES).labels
        reference.update(labels, sample.semantic_labels())

    ours = result.metrics["gt_boxes"]
    assert ours.num_images == reference.num_images == 3
    # batched encoder vs one image at a time: at most a handful of threshold-boundary pixels may flip
    assert np.abs(ours.confusion - reference.confusion).sum() <= 0.001 * reference.confusion.sum()
    assert ours.compute()["paper_mIoU"] == pytest.approx(reference.compute()["paper_mIoU"], abs=1e-3)
    assert ours.compute()["mIoU"] == pytest.approx(reference.compute()["mIoU"], abs=1e-3)


def test_all_methods_share_one_embedding_pass_and_report_both_protocols(segmenter, dataset):
    calls = []
    embed = segmenter.embed
    segmenter.embed = lambda images: calls.append(len(images)) or embed(images)

    result = evaluate(segmenter, dataset, batch_size=2, progress=False)

    assert calls == [2, 1]  # each image through the encoder once, for all three methods
    assert list(result.metrics) == list(METHODS) and result.num_images == 3
    results = result.results()
    assert list(results) == [METHOD_NAMES[m] for m in METHODS]
    for metrics in results.values():
        for key in ("paper_mIoU", "paper_mAcc", "mIoU", "mAcc", "pixel_acc"):
            assert 0.0 <= metrics[key] <= 1.0, key
        assert metrics["num_images"] == 3
        assert metrics["paper_pairs"] == 3 + 2 + 1  # (image, GT class) pairs of the three scenes
        assert metrics["num_pixels"] == 72 * 96 + 80 * 64 + 60 * 60


def test_point_modes_click_differently_on_a_concave_part(segmenter, dataset):
    center = evaluate(segmenter, dataset, ["gt_points"], point_mode="center", max_images=2, progress=False)
    interior = evaluate(segmenter, dataset, ["gt_points"], point_mode="interior", max_images=2, progress=False)
    assert interior.point_mode == "interior" and interior.num_images == 2
    # the U-shaped handle's box centre is outside it, so the two baselines prompt SAM differently
    assert not np.array_equal(center.metrics["gt_points"].confusion, interior.metrics["gt_points"].confusion)
    with pytest.raises(WpsSamError, match="point mode"):
        evaluate(segmenter, dataset, ["gt_points"], point_mode="middle", progress=False)


def label_map_from_masks(sample, drop_label=None):
    labels = np.zeros((sample.height, sample.width), np.uint8)
    for mask, label in sorted(zip(sample.masks, sample.labels), key=lambda p: -p[0].sum()):
        labels[mask] = 0 if label == drop_label else label
    return labels


def test_perfect_predictions_score_one_through_the_evaluation_loop(segmenter, dataset):
    perfect = lambda seg, batch: [label_map_from_masks(s) for s in batch.samples]  # noqa: E731
    result = evaluate(segmenter, dataset, methods=[], custom_methods={"perfect": perfect}, progress=False)
    metrics = result.results()["perfect"]
    for key in ("paper_mIoU", "paper_mAcc", "mIoU", "mAcc", "mIoU_with_background", "pixel_acc"):
        assert metrics[key] == 1.0, key


def test_hand_checked_partial_prediction(segmenter, tmp_path):
    # one 40x40 image: class 1 a 10x10 square (100 px), class 2 a 5x4 box (20 px); class 3 absent
    scene = [(40, 40, [(0, rectangle(40, 40, 2, 2, 12, 12)), (1, rectangle(40, 40, 20, 30, 25, 34))])]
    ds = CocoPartDataset(*write_dataset(tmp_path / "d", scene_list=scene))
    drop_class_2 = lambda seg, batch: [label_map_from_masks(s, drop_label=2) for s in batch.samples]  # noqa: E731
    m = evaluate(segmenter, ds, methods=[], custom_methods={"drop": drop_class_2}, progress=False).results()["drop"]
    assert m["paper_mIoU"] == m["paper_mAcc"] == 0.5  # pairs (img, 1) -> 1, (img, 2) -> 0
    assert m["mIoU"] == m["mAcc"] == 0.5  # class 3 never in GT: excluded from the means
    background_iou = 1480 / 1500  # 1480 TP, 20 class-2 pixels predicted background
    assert m["mIoU_with_background"] == pytest.approx((1 + 0 + background_iou) / 3)
    assert m["pixel_acc"] == pytest.approx(1580 / 1600)
    assert math.isnan(m["per_class"][3]["IoU"])


def test_class_mismatch_and_unreadable_image(segmenter, tmp_path):
    ds = CocoPartDataset(*write_dataset(tmp_path / "a", class_names=["x", "y", "z"]))
    with pytest.raises(WpsSamError, match="differ from the model"):
        evaluate(segmenter, ds, progress=False)

    ann, images = write_dataset(tmp_path / "b")
    (images / "img_002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(WpsSamError, match="img_002.png"):
        evaluate(segmenter, CocoPartDataset(ann, images), ["gt_boxes"], progress=False)
    result = evaluate(segmenter, CocoPartDataset(ann, images, skip_bad=True), ["gt_boxes"], progress=False)
    assert result.num_images == 2 and result.skipped == {"unreadable_image": 1}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "wps_sam_core.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_writes_json_and_markdown(tiny_files, tmp_path):
    sam_path, prompter_path = tiny_files
    write_dataset(tmp_path / "data")
    out = tmp_path / "results" / "val.json"
    proc = run_cli("eval", "--data", str(tmp_path / "data"), "--split", "val", "--json", str(out),
                   "--prompter", str(prompter_path), "--sam-checkpoint", str(sam_path), "--device", "cpu",
                   "--batch-size", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(out.read_text())
    assert list(payload["results"]) == [METHOD_NAMES[m] for m in METHODS]
    assert payload["num_images"] == 3 and payload["skipped"] == {}
    assert payload["settings"]["point_mode"] == "interior"
    for metrics in payload["results"].values():
        assert {"paper_mIoU", "paper_mAcc", "mIoU", "mAcc"} <= set(metrics)
        assert len(metrics["per_class"]) == len(TEST_CLASSES) + 1
    markdown = out.with_suffix(".md").read_text()
    assert "mIoU (paper protocol)" in markdown and "mIoU (dataset, parts)" in markdown
    assert all(name in markdown for name in METHOD_NAMES.values())
    assert "SAM + GT boxes (upper bound)" in proc.stdout and "wrote" in proc.stdout


def test_cli_missing_image_is_exit_2_or_counted_skip(tiny_files, tmp_path, capsys):
    sam_path, prompter_path = tiny_files
    ann, images = write_dataset(tmp_path / "data")
    (images / "img_003.png").unlink()
    common = ["eval", "--annotations", str(ann), "--images", str(images), "--prompter", str(prompter_path),
              "--sam-checkpoint", str(sam_path), "--device", "cpu", "--methods", "gt_boxes", "--no-progress"]

    assert cli_main(common + ["--json", str(tmp_path / "strict.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "img_003.png" in err and "not found" in err
    assert not (tmp_path / "strict.json").exists()

    assert cli_main(common + ["--json", str(tmp_path / "skip.json"), "--skip-bad"]) == 0
    payload = json.loads((tmp_path / "skip.json").read_text())
    assert payload["num_images"] == 2 and payload["skipped"] == {"missing_image": 1}
    assert "missing_image 1" in capsys.readouterr().out


# ---- instance metrics through the evaluation loop and `wps-sam eval` --------------------------------------
INSTANCE_KEYS = ("pq", "sq", "rq", "ap", "ap50", "ap75", "duplicates_per_gt", "fragments_per_gt")


def test_instance_metrics_of_a_method_that_returns_instances(segmenter, dataset):
    """Perfect instances score PQ = AP = 1 and one prediction per GT; one duplicate of one GT part lowers RQ
    of its class exactly as computed and shows in duplicates_per_gt; a label-map method has no instance metrics."""
    def perfect(seg, batch, duplicate=False):
        out = []
        for k, s in enumerate(batch.samples):
            masks, classes = s.masks, s.labels
            if duplicate and batch.indices[k] == 0:  # a second copy of image 1's first part
                masks, classes = np.concatenate([masks, masks[:1]]), np.concatenate([classes, classes[:1]])
            out.append(InstanceMasks(masks, classes, np.linspace(1.0, 0.5, len(masks)), np.ones(len(masks))))
        return out

    result = evaluate(segmenter, dataset, methods=[], progress=False, custom_methods={
        "perfect": perfect, "duplicate": lambda seg, b: perfect(seg, b, True),
        "labels only": lambda seg, b: [label_map_from_masks(s) for s in b.samples]})
    results = result.results()
    good, dup = results["perfect"], results["duplicate"]
    assert good["pq"] == good["sq"] == good["rq"] == good["ap"] == good["ap50"] == 1.0
    assert good["duplicates_per_gt"] == good["fragments_per_gt"] == 1.0 and good["instances"]["tp"] == 6
    assert good["mIoU"] == 1.0  # the instances painted are the label map
    # class 1 (mug_body): TP 2, FP 1 -> RQ 2 / 2.5; the other two classes stay at 1
    assert dup["instances"]["per_class"][0]["RQ"] == pytest.approx(0.8)
    assert dup["rq"] == pytest.approx((0.8 + 1 + 1) / 3) and dup["pq"] == pytest.approx((0.8 + 1 + 1) / 3)
    assert dup["duplicates_per_gt"] == pytest.approx(7 / 6) and dup["instances"]["fp"] == 1
    assert "pq" not in results["labels only"] and "labels only" not in result.instance_metrics


@pytest.fixture(scope="module")
def world_model_files(tmp_path_factory, small_world):
    """A tiny random prompter for the world's classes, saved as files (SAM + prompter checkpoint)."""
    from safetensors.torch import save_file

    from wps_sam_core.checkpoint import PrompterCheckpoint, save_prompter_checkpoint
    from wps_sam_core.modeling.sam import load_sam
    from wps_sam_core.modeling.wpssam import WPSSAM

    from conftest import tiny_prompter_config

    names = CocoPartDataset.from_root(small_world, "val").class_names
    torch.manual_seed(0)
    model = WPSSAM.create(load_sam("tiny"), tiny_prompter_config(len(names)))
    with torch.no_grad():
        model.prompter.class_head.bias[-1] = -20.0  # every query a part
    root = tmp_path_factory.mktemp("world_model")
    save_file({k: v.contiguous() for k, v in model.sam.state_dict().items()}, str(root / "sam.safetensors"))
    save_prompter_checkpoint(root / "prompter.safetensors", PrompterCheckpoint(
        config=model.prompter.cfg, class_names=names, sam_type="tiny", image_size=256,
        state_dict=model.prompter.state_dict()))
    return root / "sam.safetensors", root / "prompter.safetensors"


def test_eval_json_has_instance_metrics_for_every_method(world_model_files, small_world, tmp_path, capsys):
    sam_path, prompter_path = world_model_files
    out = tmp_path / "val.json"
    assert cli_main(["eval", "--data", str(small_world), "--split", "val", "--json", str(out), "--prompter",
                     str(prompter_path), "--sam-checkpoint", str(sam_path), "--device", "cpu", "--no-progress",
                     "--score-threshold", "0"]) == 0
    payload = json.loads(out.read_text())
    assert payload["settings"]["dedup_iou"] == SegmenterSettings().dedup_iou and payload["settings"]["dedup_method"]
    assert list(payload["results"]) == [METHOD_NAMES[m] for m in METHODS]
    for name, metrics in payload["results"].items():
        for key in INSTANCE_KEYS:
            assert key in metrics, (name, key)
            assert metrics[key] is None or 0.0 <= metrics[key] <= (100 if "per_gt" in key else 1.0), (name, key)
        assert metrics["instances"]["num_images"] == 4 and metrics["instances"]["num_gt"] > 0
        assert metrics["instances"]["pq"] == metrics["pq"] and "mIoU" in metrics
        if name != METHOD_NAMES["prompter"]:  # a prompt per GT part: every GT gets a mask, matched or not
            assert metrics["instances"]["num_pred"] <= metrics["instances"]["num_gt"]
        objects = metrics["objects"]  # the world names each part's object: part-to-object scores for every method
        assert objects["images"] == 4 and objects["gt_parts"] == metrics["instances"]["num_gt"]
        assert objects["part_accuracy"] == metrics["object_part_accuracy"]
        assert objects["matched_parts"] <= min(objects["gt_parts"], objects["pred_parts"])
    markdown = out.with_suffix(".md").read_text()
    assert "## Part instances" in markdown and "predictions per matched GT" in markdown
    assert "## Parts linked to their object" in markdown and "| part accuracy |" in markdown
    assert "| PQ |" in capsys.readouterr().out
