#!/usr/bin/env bash
# One short GPU check for a lent machine (H200: no internet, ~15 min of device time per session).
# Prints JSON lines (also to $OUT/gpu_check.jsonl when $OUT is set):
#   env            GPU, torch, CUDA
#   cuda_vs_cpu    embedded model (tiny random model if its assets are absent): CUDA fp32 == CPU fp32,
#                  and bf16 / fp16 autocast vs fp32 (pooled label-map mIoU, instance counts)
#   fps            vit_b and vit_t (random weights, 5 kept queries) at 640x480, fp32 and bf16:
#                  full PartSegmenter frames/s, encoder-alone frames/s, peak GPU memory
#   ort_env        onnxruntime version and providers (onnxruntime-gpu is needed for CUDA/TensorRT)
#   ort_gpu        per SAM type (ORT_SAM_TYPES, default vit_b) x provider (CUDA, TensorRT where installed) x
#                  graphs (fp32, --fp16): provider that really ran, IO binding, fps at 640x480 (5 kept) next to
#                  torch CUDA fp32 in the same run (ratio), parity vs torch CUDA fp32 (least instance IoU,
#                  pooled label mIoU), first-frame seconds (TensorRT engine build)
#   pytest         test/test_precision.py and test_backends.py's CUDA test on the GPU (they skip on CPU)
#
# The machine lacks two pure-Python packages; carry them as wheels. Once, here, in the repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl segment-anything==1.0 mobilesam-mirror==1.0.0
# then run it with the device tool: command `bash benchmarks/gpu_check.sh`, carry [".whl"], timeout ~420 s.
# Budget: model building dominates (vit_b random init on CPU); the timed loops take seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
LOG=${OUT:+$OUT/gpu_check.jsonl}
LOG=${LOG:-/dev/null}
# Overridable for a dry run without a GPU: DEVICE=cpu SAM_TYPES=tiny FRAMES=2 ORT_SAM_TYPES=tiny \
#   ORT_PROVIDERS=CPUExecutionProvider bash benchmarks/gpu_check.sh
export FRAMES=${FRAMES:-30} DEVICE=${DEVICE:-cuda} SAM_TYPES=${SAM_TYPES:-"vit_b vit_t"}

python3 - <<'PY' 2>&1 | tee "$LOG"
import copy, json, os, time
import numpy as np
import torch

from wps_sam_core.embedded import embedded_available, load_embedded_segmenter
from wps_sam_core.modeling.wpssam import WPSSAM
from wps_sam_core.preprocess import normalize_and_pad
from wps_sam_core.modeling.prompter import PrompterConfig
from wps_sam_core.modeling.sam import load_sam
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings

FRAMES, DEVICE, SAM_TYPES = int(os.environ["FRAMES"]), os.environ["DEVICE"], os.environ["SAM_TYPES"].split()
CUDA = DEVICE.startswith("cuda")
emit = lambda d: print(json.dumps(d, separators=(",", ":")), flush=True)
sync = torch.cuda.synchronize if CUDA else (lambda: None)
if CUDA:
    props = torch.cuda.get_device_properties(0)
    emit({"check": "env", "gpu": props.name, "gpu_mem_gib": round(props.total_memory / 2**30, 1),
          "torch": torch.__version__, "cuda": torch.version.cuda})
else:
    emit({"check": "env", "gpu": None, "note": "dry run on CPU (bf16/fp16 fall back to fp32)", "torch": torch.__version__})


def pooled_miou(a, b):
    classes = sorted(set().union(*(np.unique(x) for x in a + b)) - {0})
    ious = [sum(int(((x == c) & (y == c)).sum()) for x, y in zip(a, b)) /
            sum(int(((x == c) | (y == c)).sum()) for x, y in zip(a, b)) for c in classes]
    return round(float(np.mean(ious)), 5) if ious else 1.0


# ---- CUDA == CPU, and mixed precision vs fp32 -------------------------------------------------
try:
    if embedded_available():
        from wps_sam_core.data.world import render_scene
        base = load_embedded_segmenter("cpu")
        subject, settings = "embedded", base.settings
        images = [render_scene(7, i, 256, "val").image for i in range(8)]
    else:
        torch.manual_seed(0)
        model = WPSSAM.create(load_sam("tiny"), PrompterConfig(num_classes=3, num_queries=8, hidden_dim=64, num_heads=4,
                              enc_layers=1, dec_layers=2, dim_feedforward=128, dropout=0.0, prompt_dim=128))
        with torch.no_grad():
            model.prompter.class_head.bias[-1] = -20.0
        base = PartSegmenter(model.eval(), ["a", "b", "c"], device="cpu")
        subject, settings = "tiny_random", SegmenterSettings(score_threshold=0.0, max_instances=5)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 255, (200, 240, 3), dtype=np.uint8) for _ in range(4)]

    def run(device, precision):
        seg = PartSegmenter(copy.deepcopy(base.model), base.class_names, device, precision, settings)
        results = seg.segment_batch(images)
        return [r.labels for r in results], [len(r.instances) for r in results]

    cpu, cpu_n = run("cpu", "fp32")
    row = {"check": "cuda_vs_cpu", "model": subject, "images": len(images), "cpu_instances": sum(cpu_n),
           "part_pixels": int(sum((x > 0).sum() for x in cpu))}
    for precision in ("fp32", "bf16", "fp16"):
        labels, counts = run(DEVICE, precision)
        row[f"cuda_{precision}_miou_vs_cpu_fp32"] = pooled_miou(cpu, labels)
        row[f"cuda_{precision}_instances"] = sum(counts)
    row["ok"] = row["cuda_fp32_miou_vs_cpu_fp32"] >= 0.99 and min(row[f"cuda_{p}_miou_vs_cpu_fp32"] for p in ("bf16", "fp16")) >= 0.98
    emit(row)
except Exception as exc:  # keep going: the throughput numbers are still worth the device time
    emit({"check": "cuda_vs_cpu", "error": f"{type(exc).__name__}: {exc}"})

# ---- frames/s at 640x480 ---------------------------------------------------------------------
rng = np.random.default_rng(1)
frame = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
frame[120:240, 128:320] = (200, 40, 40)
for sam_type in SAM_TYPES:
    try:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        sam = load_sam(sam_type)
        model = WPSSAM.create(sam, PrompterConfig(num_classes=40, prompt_dim=sam.prompt_encoder.embed_dim))
        with torch.no_grad():
            model.prompter.class_head.bias[-1] = -20.0
        build_s = time.perf_counter() - t0
    except Exception as exc:
        emit({"check": "fps", "sam_type": sam_type, "error": f"{type(exc).__name__}: {exc}"})
        continue
    for precision in ("fp32", "bf16"):
        try:
            seg = PartSegmenter(model, [f"p{i}" for i in range(40)], DEVICE, precision,
                                SegmenterSettings(score_threshold=0.0, max_instances=5))
            for _ in range(3):
                seg.segment(frame)
            sync()
            if CUDA:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(FRAMES):
                result = seg.segment(frame)  # ends in numpy: synchronised
            frame_s = (time.perf_counter() - t0) / FRAMES
            peak = torch.cuda.max_memory_allocated() / 2**20 if CUDA else float("nan")
            resized, _ = seg.transform.resize_image(frame)
            x = normalize_and_pad(model.sam, [resized])
            with torch.inference_mode(), seg.runner.autocast():
                for _ in range(3):
                    model.sam.image_encoder(x)
                sync()
                t0 = time.perf_counter()
                for _ in range(FRAMES):
                    model.sam.image_encoder(x)
                sync()
            encoder_s = (time.perf_counter() - t0) / FRAMES
            emit({"check": "fps", "sam_type": sam_type, "precision": precision, "image_hw": [480, 640],
                  "kept_queries": 5, "instances": len(result.instances), "frames": FRAMES,
                  "segmenter_fps": round(1 / frame_s, 1), "encoder_fps": round(1 / encoder_s, 1),
                  "overhead_ratio": round(frame_s / encoder_s - 1, 3), "peak_mem_mib": None if peak != peak else round(peak),
                  "model_build_s": round(build_s, 1)})
        except Exception as exc:
            emit({"check": "fps", "sam_type": sam_type, "precision": precision, "error": f"{type(exc).__name__}: {exc}"})
    del model, sam
    if CUDA:
        torch.cuda.empty_cache()
PY

# ---- onnxruntime on the GPU: CUDA and TensorRT providers, fp32 and fp16 graphs ------------------
export ORT_SAM_TYPES=${ORT_SAM_TYPES:-"vit_b"}
python3 - <<'PY' 2>&1 | tee -a "$LOG"
import json, os, statistics, tempfile, time
import numpy as np
import torch

emit = lambda d: print(json.dumps(d, separators=(",", ":")), flush=True)
try:
    import onnxruntime as ort
except ImportError:
    emit({"check": "ort_env", "error": "onnxruntime is not installed (pip install onnxruntime-gpu)"})
    raise SystemExit(0)
available = ort.get_available_providers()
emit({"check": "ort_env", "onnxruntime": ort.__version__, "providers": available, "device": ort.get_device()})
from wps_sam_core.backends.onnx_runner import OnnxRunner
from wps_sam_core.export import export_onnx
from wps_sam_core.modeling.prompter import PrompterConfig
from wps_sam_core.modeling.sam import load_sam
from wps_sam_core.modeling.wpssam import WPSSAM
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings

FRAMES, DEVICE = int(os.environ["FRAMES"]), os.environ["DEVICE"]
# ORT_PROVIDERS=CPUExecutionProvider: a dry run of this section without a GPU
wanted = os.environ.get("ORT_PROVIDERS", "CUDAExecutionProvider TensorrtExecutionProvider").split()
providers = [p for p in wanted if p in available]
if not providers:
    emit({"check": "ort_gpu", "error": f"no GPU provider in this onnxruntime ({available}); install onnxruntime-gpu"})
rng = np.random.default_rng(1)
frame = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
frame[120:240, 128:320] = (200, 40, 40)
settings = SegmenterSettings(score_threshold=0.0, max_instances=5)


def fps_of(seg):
    t0 = time.perf_counter()
    seg.segment(frame)  # first frame: TensorRT builds its engines here
    first = time.perf_counter() - t0
    for _ in range(2):
        seg.segment(frame)
    t0 = time.perf_counter()
    for _ in range(FRAMES):
        result = seg.segment(frame)
    return FRAMES / (time.perf_counter() - t0), first, result


for sam_type in os.environ["ORT_SAM_TYPES"].split() if providers else []:
    try:
        torch.manual_seed(0)
        sam = load_sam(sam_type)
        model = WPSSAM.create(sam, PrompterConfig(num_classes=40, prompt_dim=sam.prompt_encoder.embed_dim)).eval()
        with torch.no_grad():
            model.prompter.class_head.bias[-1] = -20.0
        names = [f"p{i}" for i in range(40)]
        tmp = tempfile.mkdtemp(prefix="ort_gpu_")
        dirs = {"fp32": f"{tmp}/fp32", "fp16": f"{tmp}/fp16"}
        for precision, folder in dirs.items():
            export_onnx(model, names, folder, sam_type=sam_type, fp16=precision == "fp16")
        reference = PartSegmenter(model, names, DEVICE, "fp32", settings)
        torch_fps, _, expected = fps_of(reference)
    except Exception as exc:
        emit({"check": "ort_gpu", "sam_type": sam_type, "error": f"{type(exc).__name__}: {exc}"})
        continue
    for provider in providers:
        for precision, folder in dirs.items():
            try:
                seg = PartSegmenter(OnnxRunner(folder, [provider, "CPUExecutionProvider"]), names, settings=settings)
                fps, first, got = fps_of(seg)
                ious = [float((a.mask & b.mask).sum() / max((a.mask | b.mask).sum(), 1))
                        for a, b in zip(expected.instances, got.instances)]
                classes = sorted((set(np.unique(expected.labels)) | set(np.unique(got.labels))) - {0})
                miou = np.mean([((expected.labels == c) & (got.labels == c)).sum() / max(((expected.labels == c) | (got.labels == c)).sum(), 1)
                                for c in classes]) if classes else 1.0
                emit({"check": "ort_gpu", "sam_type": sam_type, "provider": provider, "ran_on": seg.runner.provider,
                      "graphs": precision, "io_binding": seg.runner.io_binding, "frames": FRAMES,
                      "fps": round(fps, 1), "torch_cuda_fp32_fps": round(torch_fps, 1),
                      "ratio_over_torch": round(fps / torch_fps, 3), "first_frame_s": round(first, 1),
                      "same_classes": [i.class_id for i in got.instances] == [i.class_id for i in expected.instances],
                      "min_instance_iou": round(min(ious, default=1.0), 4), "label_miou": round(float(miou), 4),
                      "ok": seg.runner.provider == provider and min(ious, default=1.0) >= (0.99 if precision == "fp32" else 0.95)})
            except Exception as exc:
                emit({"check": "ort_gpu", "sam_type": sam_type, "provider": provider, "graphs": precision,
                      "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
PY

python3 -m pytest -q -p no:cacheprovider test/test_precision.py test/test_backends.py -k "precision or cuda" 2>&1 | tail -n 3 | tee -a "$LOG"
