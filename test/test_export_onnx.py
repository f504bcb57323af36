"""`wps-sam export --onnx`: onnxruntime (CPU) on the exported graphs == PyTorch, dynamic batch and query count."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wps_sam_core.cli import main
from wps_sam_core.export import merge_duplicates, select_queries
from wps_sam_core.preprocess import normalize_and_pad
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings

from conftest import TEST_CLASSES, random_image

ort = pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxruntime) is not installed")
pytest.importorskip("onnx", reason="the `export` extra (onnx, onnxruntime) is not installed")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_files):
    sam_path, prompter_path = tiny_files
    out = tmp_path_factory.mktemp("onnx") / "model"
    code = main(["export", "--onnx", str(out), "--prompter", str(prompter_path), "--sam-checkpoint", str(sam_path)])
    assert code == 0
    meta = json.loads((out / "export.json").read_text())
    sessions = {name: ort.InferenceSession(str(out / file), providers=["CPUExecutionProvider"])
                for name, file in meta["files"].items()}
    return meta, sessions


@pytest.fixture(scope="module")
def segmenter(tiny_files):
    sam_path, prompter_path = tiny_files
    return PartSegmenter.from_checkpoints(prompter_path, sam_checkpoint=sam_path, device="cpu",
                                          settings=SegmenterSettings(score_threshold=0.0, max_instances=5))


def test_metadata_names_the_model(exported):
    meta, sessions = exported
    assert set(sessions) == {"image_encoder", "prompter", "mask_decoder"}
    assert meta["sam_type"] == "tiny" and meta["class_names"] == TEST_CLASSES
    assert meta["image_size"] == 256 and meta["embedding_shape"] == [128, 16, 16]
    assert meta["no_object_index"] == len(TEST_CLASSES)
    assert meta["duplicates"]["dedup_iou"] == SegmenterSettings().dedup_iou and meta["duplicates"]["method"] == "merge"


@pytest.mark.parametrize("batch", [1, 2])
def test_encoder_and_prompter_match_pytorch(exported, segmenter, batch):
    _, sessions = exported
    model = segmenter.model
    images = [random_image(120 + 40 * i, 200, seed=i) for i in range(batch)]
    x = normalize_and_pad(model.sam, [segmenter.transform.resize_image(im)[0] for im in images])
    with torch.no_grad():
        embedding = model.sam.image_encoder(x)
        out = model(embedding)
    (onnx_embedding,) = sessions["image_encoder"].run(None, {"image": x.numpy()})
    np.testing.assert_allclose(onnx_embedding, embedding.numpy(), atol=1e-4)
    logits, tokens = sessions["prompter"].run(None, {"embedding": embedding.numpy()})
    assert logits.shape == (batch, model.prompter.cfg.num_queries, len(TEST_CLASSES) + 1)
    np.testing.assert_allclose(logits, out.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(tokens, out.tokens.numpy(), atol=1e-4)


@pytest.mark.parametrize("num_queries", [1, 5])
def test_decoder_takes_a_dynamic_number_of_kept_queries(exported, segmenter, num_queries):
    _, sessions = exported
    model = segmenter.model
    gen = torch.Generator().manual_seed(num_queries)
    embedding = torch.randn(2, 128, 16, 16, generator=gen)
    image_index = torch.randint(0, 2, (num_queries,), generator=gen)
    tokens = torch.randn(num_queries, 2, 128, generator=gen)
    with torch.no_grad():
        low_res, iou = model.decode(embedding, image_index, tokens)
    onnx_low, onnx_iou = sessions["mask_decoder"].run(
        None, {"embedding": embedding.numpy(), "image_index": image_index.numpy(), "tokens": tokens.numpy()})
    assert onnx_low.shape == (num_queries, 1, 64, 64) and onnx_iou.shape == (num_queries,)
    np.testing.assert_allclose(onnx_low, low_res.numpy(), atol=1e-4)
    np.testing.assert_allclose(onnx_iou, iou.numpy(), atol=1e-5)


def test_onnx_pipeline_reproduces_the_segmenter(exported, segmenter):
    """Encoder -> prompter -> host-side keep rule -> decoder -> host-side duplicate merging -> SAM upsampling
    == PartSegmenter masks."""
    _, sessions = exported
    model = segmenter.model
    images = [random_image(150, 230, seed=7), random_image(256, 100, seed=8)]
    resized, geometries = zip(*(segmenter.transform.resize_image(im) for im in images))
    x = normalize_and_pad(model.sam, list(resized)).numpy()
    (embedding,) = sessions["image_encoder"].run(None, {"image": x})
    logits, tokens = sessions["prompter"].run(None, {"embedding": embedding})
    image_index, query_index, class_ids, scores = select_queries(logits, 0.0, 5)
    with torch.no_grad():
        ours = segmenter._select(torch.as_tensor(logits), segmenter.settings)
    assert np.array_equal(image_index, ours[0].numpy()) and np.array_equal(query_index, ours[1].numpy())
    assert np.array_equal(class_ids, ours[2].numpy()) and len(image_index) == 10
    low_res, _ = sessions["mask_decoder"].run(
        None, {"embedding": embedding, "image_index": image_index, "tokens": tokens[image_index, query_index]})
    keep, low_res = merge_duplicates(low_res, image_index, class_ids, scores, segmenter.settings.dedup_iou)
    expected = segmenter.segment_batch(images)
    for b, (geometry, result) in enumerate(zip(geometries, expected)):
        assert len({i.instance_id for i in result.instances}) <= (image_index[keep] == b).sum() <= 5
        with torch.no_grad():
            masks = model.sam.postprocess_masks(torch.as_tensor(low_res[image_index[keep] == b]), geometry.input_size,
                                                geometry.original_size)[:, 0] > 0
        union = masks.any(0).numpy()
        assert union.shape == result.labels.shape
        assert (union != (result.labels > 0)).mean() < 1e-3  # only pixels within float noise of the threshold


def test_export_into_a_file_path_is_a_one_line_error(tmp_path, tiny_files, capsys):
    sam_path, prompter_path = tiny_files
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    code = main(["export", "--onnx", str(target), "--prompter", str(prompter_path), "--sam-checkpoint", str(sam_path)])
    err = capsys.readouterr().err
    assert code == 2 and "not_a_dir" in err and "not a folder" in err and len(err.strip().splitlines()) == 1


def test_grid_box_head_exports_with_sams_prompt_encoding(tmp_path):
    """The embedded default's prompter kind (grid queries, box head): the ONNX prompter graph includes SAM's
    prompt encoding of the predicted boxes, so its tokens equal PyTorch's."""
    from dataclasses import replace

    from conftest import tiny_prompter_config
    from wps_sam_core.export import export_onnx
    from wps_sam_core.modeling.wpssam import WPSSAM
    from wps_sam_core.modeling.sam import load_sam

    torch.manual_seed(5)
    model = WPSSAM.create(load_sam("tiny"), replace(tiny_prompter_config(), queries="grid", prompt_head="box")).eval()
    exported = export_onnx(model, TEST_CLASSES, tmp_path / "grid", include_encoder=False)
    session = ort.InferenceSession(str(exported.files["prompter"]), providers=["CPUExecutionProvider"])
    embedding = torch.randn(2, 128, 16, 16)
    logits, tokens = session.run(None, {"embedding": embedding.numpy()})
    with torch.no_grad():
        out = model(embedding)
    assert tokens.shape == (2, model.prompter.num_queries, 2, 128)
    np.testing.assert_allclose(logits, out.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(tokens, out.tokens.numpy(), atol=1e-4)


def test_host_side_merging_equals_the_segmenters(segmenter):
    """merge_duplicates on numpy decoder outputs of two images = PartSegmenter's step on each image."""
    from wps_sam_core.postprocess.dedup import merge_duplicates as torch_merge

    gen = torch.Generator().manual_seed(3)
    base = torch.randn(3, 1, 16, 16, generator=gen)
    low_res = torch.cat([base, base + 0.3 * torch.randn(3, 1, 16, 16, generator=gen)]).numpy()  # near-duplicates
    image_index = np.array([0, 0, 1, 0, 0, 1])
    class_ids, scores = np.array([1, 2, 1, 1, 2, 1]), np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], np.float32)
    keep, merged = merge_duplicates(low_res, image_index, class_ids, scores, 0.35)
    for b in (0, 1):
        sel = np.flatnonzero(image_index == b)
        k, m = torch_merge(torch.from_numpy(low_res[sel]), torch.from_numpy(class_ids[sel]),
                           torch.from_numpy(scores[sel]), 0.35)
        assert keep[image_index[keep] == b].tolist() == sel[k.numpy()].tolist()
        np.testing.assert_array_equal(merged[image_index[keep] == b], m.numpy())
    assert len(keep) < len(low_res)  # the near-duplicates were merged
    off_keep, off = merge_duplicates(low_res, image_index, class_ids, scores, 0.0)
    assert off_keep.tolist() == list(range(6)) and np.array_equal(off, low_res)
