"""backend onnxruntime == backend torch: the same PartSegmentation (classes, ids, masks, maps) with the same
settings, on the embedded model and a tiny random model; the shared pre/post-processing; providers; IO binding."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from wps_sam_core.cli import main
from wps_sam_core.errors import WpsSamError
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings, load_segmenter

from conftest import random_image

ort = pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxruntime) is not installed")
pytest.importorskip("onnx", reason="the `export` extra (onnx, onnxruntime) is not installed")
from wps_sam_core.backends.onnx_runner import OnnxRunner, resolve_providers  # noqa: E402

MIN_IOU = 0.99  # per instance, onnxruntime vs torch
MAX_LABEL_DIFF = 1e-3  # share of label-map pixels that may differ (logits within float noise of the threshold)


def assert_same_result(expected, got, min_iou: float = MIN_IOU, max_label_diff: float = MAX_LABEL_DIFF) -> list[float]:
    """Same instances (ids, classes, in order), per-instance mask IoU >= min_iou, label/instance maps equal
    but for a few pixels; returns the IoUs."""
    assert [(i.instance_id, i.class_id, i.class_name) for i in got.instances] == \
        [(i.instance_id, i.class_id, i.class_name) for i in expected.instances]
    ious = [float((a.mask & b.mask).sum() / max((a.mask | b.mask).sum(), 1))
            for a, b in zip(expected.instances, got.instances)]
    assert min(ious, default=1.0) >= min_iou, ious
    assert got.labels.dtype == expected.labels.dtype and got.labels.shape == expected.labels.shape
    assert (got.labels != expected.labels).mean() <= max_label_diff
    assert (got.instance_ids != expected.instance_ids).mean() <= max_label_diff
    for a, b in zip(expected.instances, got.instances):
        assert abs(a.score - b.score) < 1e-4 and abs(a.iou_prediction - b.iou_prediction) < 1e-3
    return ious


@pytest.fixture(scope="module")
def world_images():
    from wps_sam_core.data.world import render_scene

    images = [render_scene(7, i, 256, "val").image for i in range(4)]
    big = np.asarray(torch.nn.functional.interpolate(torch.as_tensor(images[0]).permute(2, 0, 1)[None].float(),
                                                     (480, 640)).round()[0].permute(1, 2, 0).to(torch.uint8))
    return images + [big]  # + a 640x480 camera frame


@pytest.fixture(scope="module")
def embedded_pair(tmp_path_factory):
    """(torch segmenter, onnxruntime segmenter, ONNX folder) of the embedded default, the folder made by the CLI."""
    out = tmp_path_factory.mktemp("onnx_embedded") / "model"
    assert main(["export", "--onnx", str(out)]) == 0
    return load_segmenter(device="cpu"), load_segmenter(backend="onnxruntime", onnx_dir=out), out


SETTINGS_CASES = {
    "defaults": {},
    "dedup-off": {"dedup_iou": 0.0},
    "low-threshold-dedup": {"score_threshold": 0.2, "dedup_iou": 0.2},
    "class-filter": {"class_filter": ("hammer_head", "car_wheel", "mug_handle", "bottle_cap")},
    "overlap-score-max3": {"overlap": "score", "max_instances": 3},
}


@pytest.mark.parametrize("changes", SETTINGS_CASES.values(), ids=SETTINGS_CASES.keys())
def test_embedded_model_onnxruntime_equals_torch(embedded_pair, world_images, changes):
    torch_seg, onnx_seg, _ = embedded_pair
    for seg in (torch_seg, onnx_seg):  # through update_settings, as the node changes them
        seg.update_settings(**{**SegmenterSettings().__dict__, **changes})
    assert onnx_seg.settings == torch_seg.settings
    instances = 0
    for expected, got in zip(torch_seg.segment_batch(world_images), onnx_seg.segment_batch(world_images)):
        assert_same_result(expected, got)
        instances += len(expected.instances)
        if changes.get("class_filter"):
            assert {i.class_name for i in got.instances} <= set(changes["class_filter"])
    assert instances >= len(world_images)  # the comparison compared parts, not empty frames


def test_embedded_metadata_and_description(embedded_pair):
    torch_seg, onnx_seg, out = embedded_pair
    meta = json.loads((out / "export.json").read_text())
    assert meta["precision"] == "fp32" and meta["caveat"] == torch_seg.caveat and meta["num_prompt_tokens"] == 2
    assert onnx_seg.caveat == torch_seg.caveat  # the demo-model warning follows the graphs
    assert onnx_seg.backend == "onnxruntime" and onnx_seg.runner.provider == "CPUExecutionProvider"
    assert str(out) in onnx_seg.description and onnx_seg.class_names == torch_seg.class_names
    assert onnx_seg.sam_type == "tiny" and onnx_seg.precision == "fp32"
    with pytest.raises(WpsSamError, match="needs the PyTorch model.*--backend torch"):
        onnx_seg.model


def test_io_binding_keeps_the_embedding_in_onnxruntime(embedded_pair, world_images):
    """The GPU path's code (embedding bound as an OrtValue between the graphs), exercised on the CPU provider."""
    torch_seg, _, out = embedded_pair
    torch_seg.update_settings(**SegmenterSettings().__dict__)
    seg = PartSegmenter(OnnxRunner(out, io_binding=True), torch_seg.class_names)
    embeddings, geometries = seg.embed(world_images[:2])
    assert isinstance(embeddings, ort.OrtValue) and embeddings.shape() == [2, 128, 16, 16]
    for expected, got in zip(torch_seg.segment_batch(world_images[:2]), seg.segment_embeddings(embeddings, geometries)):
        assert_same_result(expected, got)
    # a torch embedding from a cache goes through the same runner
    cached, _ = torch_seg.embed(world_images[:1])
    assert_same_result(torch_seg.segment_embeddings(cached, geometries[:1])[0],
                       seg.segment_embeddings(cached, geometries[:1])[0])


def test_onnxruntime_segmenter_is_thread_safe(embedded_pair, world_images):
    """Frames from several threads at once (the node's worker + a CLI batch) give each frame's own result."""
    torch_seg, onnx_seg, _ = embedded_pair
    onnx_seg.update_settings(**SegmenterSettings().__dict__)
    torch_seg.update_settings(**SegmenterSettings().__dict__)
    expected = torch_seg.segment_batch(world_images)
    results: dict[int, object] = {}

    def work(i):
        for _ in range(3):
            results[i] = onnx_seg.segment(world_images[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(world_images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        assert_same_result(want, results[i])


def test_tiny_model_exported_on_first_use_into_the_cache(tiny_files, tmp_path, monkeypatch, caplog):
    """No onnx_dir: the model is exported once into $WPS_SAM_CACHE_DIR/onnx/<key> (atomically), reused after."""
    sam_path, prompter_path = tiny_files
    monkeypatch.setenv("WPS_SAM_CACHE_DIR", str(tmp_path / "cache"))
    settings = SegmenterSettings(score_threshold=0.0, max_instances=5)
    torch_seg = load_segmenter(prompter_path, sam_checkpoint=sam_path, device="cpu", settings=settings)
    with caplog.at_level("INFO", logger="wps_sam_core.backends"):
        first = load_segmenter(prompter_path, sam_checkpoint=sam_path, settings=settings, backend="onnxruntime")
    assert "first use" in caplog.text and "CPUExecutionProvider" in caplog.text
    entries = list((tmp_path / "cache" / "onnx").iterdir())
    assert [e.name for e in entries] == [first.runner.directory.name] and not entries[0].name.startswith(".")
    caplog.clear()
    with caplog.at_level("INFO", logger="wps_sam_core.backends"):
        again = load_segmenter(prompter_path, sam_checkpoint=sam_path, settings=settings, backend="onnxruntime")
    assert "from the cache" in caplog.text and again.runner.directory == first.runner.directory
    images = [random_image(150, 230, seed=7), random_image(256, 100, seed=8)]
    for expected, got in zip(torch_seg.segment_batch(images), again.segment_batch(images)):
        assert len(expected.instances) >= 1
        assert_same_result(expected, got)


def test_random_sam_weights_are_not_cached(tiny_files, tmp_path, monkeypatch):
    _, prompter_path = tiny_files
    monkeypatch.setenv("WPS_SAM_CACHE_DIR", str(tmp_path / "cache"))
    seg = load_segmenter(prompter_path, sam_checkpoint="random", backend="onnxruntime")
    assert not (tmp_path / "cache").exists() and not seg.runner.directory.exists()  # temporary, gone
    assert len(seg.segment(random_image(64, 80)).labels) == 64  # onnxruntime holds the graphs in memory


def test_fp16_export_runs_close_to_fp32(tiny_files, tmp_path):
    """--fp16 graphs (for GPU providers) keep fp32 inputs/outputs; on CPU they agree with fp32 within fp16 noise."""
    import onnx

    sam_path, prompter_path = tiny_files
    out = tmp_path / "fp16"
    assert main(["export", "--onnx", str(out), "--fp16", "--prompter", str(prompter_path),
                 "--sam-checkpoint", str(sam_path)]) == 0
    assert json.loads((out / "export.json").read_text())["precision"] == "fp16"
    graph = onnx.load(str(out / "image_encoder.onnx"))
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    settings = SegmenterSettings(score_threshold=0.0, max_instances=5, dedup_iou=0.0)
    seg = load_segmenter(prompter_path, sam_checkpoint=sam_path, settings=settings, backend="onnxruntime",
                         onnx_dir=out)
    assert seg.precision == "fp16" and seg.runner.optimization == "extended"  # see OnnxRunner: level "all" crashes
    torch_seg = load_segmenter(prompter_path, sam_checkpoint=sam_path, device="cpu", settings=settings)
    image = random_image(200, 240, seed=3)
    expected, got = torch_seg.segment(image), seg.segment(image)
    assert [i.class_id for i in got.instances] == [i.class_id for i in expected.instances]
    assert (got.labels != expected.labels).mean() < 0.05


def test_cli_predict_with_backend_onnxruntime_writes_what_torch_writes(embedded_pair, tmp_path, world_images):
    from PIL import Image

    _, _, out = embedded_pair
    image = tmp_path / "frame.png"
    Image.fromarray(world_images[1]).save(image)
    assert main(["predict", str(image), "--out", str(tmp_path / "torch"), "--device", "cpu"]) == 0
    assert main(["predict", str(image), "--out", str(tmp_path / "ort"), "--backend", "onnxruntime",
                 "--onnx-dir", str(out), "--onnx-providers", "cpu", "--onnx-threads", "1"]) == 0
    a = np.asarray(Image.open(tmp_path / "torch" / "frame_labels.png"))
    b = np.asarray(Image.open(tmp_path / "ort" / "frame_labels.png"))
    assert a.any() and (a != b).mean() <= MAX_LABEL_DIFF
    parts = [json.loads((tmp_path / d / "frame_parts.json").read_text())["instances"] for d in ("torch", "ort")]
    assert [p["class_name"] for p in parts[0]] == [p["class_name"] for p in parts[1]]


def test_node_runs_on_onnxruntime_and_diagnostics_name_it(embedded_pair):
    from wps_sam_ros import topics
    from wps_sam_ros.core import load_segmenter as node_load_segmenter

    _, _, out = embedded_pair
    seg = node_load_segmenter({**topics.defaults(), "backend": "onnxruntime", "onnx_dir": str(out),
                               "onnx_providers": "cpu", "onnx_threads": 1})
    assert seg.backend == "onnxruntime" and seg.runner.threads == 1
    with pytest.raises(WpsSamError, match="onnx_threads must be in"):
        node_load_segmenter({**topics.defaults(), "backend": "onnxruntime", "onnx_threads": -1})


def test_providers_resolve_in_order_and_bad_names_are_named():
    available = ort.get_available_providers()
    default = resolve_providers("")
    assert default[-1] == "CPUExecutionProvider" and set(default) <= set(available)
    assert resolve_providers("cpu") == ["CPUExecutionProvider"] == resolve_providers(["CPUExecutionProvider"])
    with pytest.raises(WpsSamError, match="unknown execution provider 'gpu'"):
        resolve_providers("gpu")
    from wps_sam_core.backends.onnx_loading import runner_options

    assert runner_options("cpu", "") == {"providers": "cpu", "device_id": 0}  # the device choice holds
    assert runner_options("auto", "") == {"providers": "", "device_id": 0}
    assert runner_options("cuda:1", "cuda") == {"providers": "cuda", "device_id": 1}
    with pytest.raises(WpsSamError, match="unknown device 'cuda:x'"):
        runner_options("cuda:x", "")
    if "TensorrtExecutionProvider" not in available:
        with pytest.raises(WpsSamError, match="none is available"):
            resolve_providers("tensorrt")


def test_shared_preprocessing_and_upsampling_equal_sams_own(tiny_model):
    """The model-free pieces every backend uses are bit-identical to segment_anything's Sam methods."""
    from wps_sam_core.postprocess.masks import upscale_masks
    from wps_sam_core.preprocess import SamTransform, normalize_and_pad, sam_input_batch

    transform = SamTransform(tiny_model.image_size)
    resized = [transform.resize_image(random_image(h, w, seed=h))[0] for h, w in ((100, 256), (256, 60))]
    assert torch.equal(sam_input_batch(resized, tiny_model.image_size), normalize_and_pad(tiny_model.sam, resized))
    low_res = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(upscale_masks(low_res, tiny_model.image_size, (100, 256), (117, 300)),
                           tiny_model.sam.postprocess_masks(low_res, (100, 256), (117, 300)))


def test_eval_baselines_need_the_torch_backend(capsys, tmp_path):
    code = main(["eval", "--data", str(tmp_path), "--json", str(tmp_path / "r.json"), "--backend", "onnxruntime",
                 "--methods", "gt_boxes", "prompter"])
    err = capsys.readouterr().err
    assert code == 2 and "--methods gt_boxes" in err and "--backend torch" in err and len(err.strip().splitlines()) == 1


def test_onnx_dir_with_backend_torch_is_refused():
    with pytest.raises(WpsSamError, match="is for backend onnxruntime"):
        load_segmenter(backend="torch", onnx_dir="somewhere")
    with pytest.raises(WpsSamError, match="backend must be one of"):
        load_segmenter(backend="tensorflow")


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                    reason="onnxruntime has no CUDA provider here (onnxruntime-gpu on a GPU machine)")
def test_cuda_provider_with_io_binding_equals_torch(embedded_pair, world_images):
    torch_seg, _, out = embedded_pair
    seg = load_segmenter(backend="onnxruntime", onnx_dir=out, onnx_providers="cuda,cpu")
    assert seg.runner.provider == "CUDAExecutionProvider" and seg.runner.io_binding
    torch_seg.update_settings(**SegmenterSettings().__dict__)
    for expected, got in zip(torch_seg.segment_batch(world_images), seg.segment_batch(world_images)):
        assert_same_result(expected, got)


def test_export_leaves_the_model_in_eval_mode(tmp_path):
    """Regression: the graph wrappers were made in training mode and the exporter restored it onto the model,
    so a model used after export_onnx ran with the prompter's dropout on (outputs changed at every call)."""
    from wps_sam_core.export import export_onnx
    from wps_sam_core.modeling.prompter import PrompterConfig
    from wps_sam_core.modeling.sam import load_sam
    from wps_sam_core.modeling.wpssam import WPSSAM

    torch.manual_seed(0)
    model = WPSSAM.create(load_sam("tiny"), PrompterConfig(num_classes=3, prompt_dim=128, enc_layers=1, dec_layers=1,
                                                           dropout=0.1)).eval()
    embedding = torch.randn(1, 128, 16, 16)
    with torch.no_grad():
        before = model(embedding).logits
    export_onnx(model, ["a", "b", "c"], tmp_path / "m", include_encoder=False)
    assert not any(module.training for module in model.modules())
    with torch.no_grad():
        assert torch.equal(model(embedding).logits, before)
