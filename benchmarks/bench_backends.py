"""backends: backend torch vs backend onnxruntime (CPU provider) at 640x480 -> one JSON line.

Side by side in one process, same weights, interleaved frames (load drift hits both alike), per model
(the embedded default; vit_t and vit_b with random weights, every query a part, 5 kept) and per thread
count (torch threads = onnxruntime intra-op threads):
  fps          full PartSegmenter.segment() frames per second, each backend, and onnxruntime / torch
  stages_ms    where a frame goes: encode, prompt, decode (the kept queries), the rest (resize, keep rule,
               dedup, upsampling, painting, objects) — the shared code, equal for both backends by design
  optimisation onnxruntime's encoder at each graph optimisation level (1 thread)
  parity       onnxruntime masks vs torch masks on the frame(s): least per-instance IoU, same classes/ids
Then the node end to end: `part_seg_node --transport dds` on the embedded model, CPU, fed 640x480 frames
at 30 Hz over loopback DDS, answered frames per second, for each backend.
Target: onnxruntime CPU >= 1.3x torch CPU on the same model.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import emit, machine, stats, timed

from wps_sam_core.backends.onnx_runner import OPTIMIZATION_LEVELS, OnnxRunner
from wps_sam_core.export import export_onnx
from wps_sam_core.preprocess import sam_input_batch, to_rgb_uint8
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings

TARGET_RATIO = 1.3
KEPT = 5


def torch_segmenter(model_name: str) -> PartSegmenter:
    if model_name == "embedded":
        from wps_sam_core.embedded import load_embedded_segmenter

        return load_embedded_segmenter("cpu")
    from wps_sam_core.modeling.prompter import PrompterConfig
    from wps_sam_core.modeling.sam import load_sam
    from wps_sam_core.modeling.wpssam import WPSSAM

    torch.manual_seed(0)
    sam = load_sam(model_name)
    model = WPSSAM.create(sam, PrompterConfig(num_classes=40, prompt_dim=sam.prompt_encoder.embed_dim))
    with torch.no_grad():
        model.prompter.class_head.bias[-1] = -20.0  # every query a part: max_instances sets the kept count
    return PartSegmenter(model.eval(), [f"part_{i}" for i in range(40)], "cpu", sam_type=model_name,
                         settings=SegmenterSettings(score_threshold=0.0, max_instances=KEPT))


def camera_frames(model_name: str) -> list[np.ndarray]:
    """640x480 frames: the part world scaled up for the embedded model (it finds parts there), noise + a block else."""
    if model_name == "embedded":
        import cv2

        from wps_sam_core.data.world import render_scene

        return [cv2.resize(render_scene(7, i, 256, "val").image, (640, 480), interpolation=cv2.INTER_LINEAR)
                for i in range(3)]
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    frame[120:240, 128:320] = (200, 40, 40)
    return [frame]


def parity(expected, got) -> dict:
    same = [(i.instance_id, i.class_id) for i in expected.instances] == [(i.instance_id, i.class_id) for i in got.instances]
    ious = [float((a.mask & b.mask).sum() / max((a.mask | b.mask).sum(), 1)) for a, b in zip(expected.instances, got.instances)]
    return {"instances": len(expected.instances), "same_ids_and_classes": same,
            "min_instance_iou": round(min(ious, default=1.0), 5),
            "label_pixels_differing": int((expected.labels != got.labels).sum())}


def stage_times(seg: PartSegmenter, frame: np.ndarray, repeats: int) -> dict:
    """Median ms of each stage, through the segmenter's own runner (the same calls segment() makes)."""
    runner = seg.runner
    resized, geometry = seg.transform.resize_image(to_rgb_uint8(frame))
    batch = sam_input_batch([resized], runner.image_size)
    out: dict[str, list[float]] = {"encode": [], "prompt": [], "decode": [], "frame": []}
    with torch.inference_mode():
        embedding = runner.encode(batch)
        logits, tokens = runner.prompt(embedding)
        image_index, query_index, _, _ = seg._select(logits, seg.settings)
        kept = tokens[image_index, query_index]
        for _ in range(repeats):
            out["encode"].append(timed(lambda: runner.encode(batch)))
            out["prompt"].append(timed(lambda: runner.prompt(embedding)))
            out["decode"].append(timed(lambda: runner.decode(embedding, image_index, kept)))
            out["frame"].append(timed(lambda: seg.segment(frame)))
    med = {k: statistics.median(v) * 1000 for k, v in out.items()}
    med["rest"] = med["frame"] - med["encode"] - med["prompt"] - med["decode"]
    return {k: round(v, 2) for k, v in med.items()} | {"kept_queries": int(len(image_index))}


def compare(model_name: str, threads_list: list[int], seconds: float, tmp: Path, parity_only: bool = False) -> dict:
    seg_torch = torch_segmenter(model_name)
    start = time.perf_counter()
    exported = export_onnx(seg_torch.model, seg_torch.class_names, tmp / model_name, sam_type=seg_torch.sam_type)
    row: dict = {"model": model_name, "export_s": round(time.perf_counter() - start, 1),
                 "onnx_mb": round(sum(p.stat().st_size for p in exported.files.values()) / 1e6, 1), "per_threads": []}
    frames = camera_frames(model_name)
    if parity_only:  # one frame per backend: vit_b's encoder takes about a minute per frame on one core
        torch.set_num_threads(threads_list[0])
        onnx_seg = PartSegmenter(OnnxRunner(exported.directory, "cpu", threads=threads_list[0]), seg_torch.class_names,
                                 settings=seg_torch.settings)
        results, seconds_each = {}, {}
        for name, seg in (("torch", seg_torch), ("onnxruntime", onnx_seg)):
            start = time.perf_counter()
            results[name] = seg.segment(frames[0])
            seconds_each[name] = round(time.perf_counter() - start, 2)
        row.update(parity=[parity(results["torch"], results["onnxruntime"])], frame_s=seconds_each)
        return row
    for threads in threads_list:
        torch.set_num_threads(threads)
        seg_onnx = PartSegmenter(OnnxRunner(exported.directory, "cpu", threads=threads), seg_torch.class_names,
                                 settings=seg_torch.settings)
        for seg in (seg_torch, seg_onnx):
            seg.segment(frames[0])  # warm-up (allocations, onnxruntime's first-run arena)
        times = {"torch": [], "onnxruntime": []}
        deadline, i = time.perf_counter() + seconds, 0
        while time.perf_counter() < deadline or min(len(v) for v in times.values()) < 2:
            frame = frames[i % len(frames)]
            order = (("torch", seg_torch), ("onnxruntime", seg_onnx))[:: 1 if i % 2 == 0 else -1]  # alternate who goes first
            for name, seg in order:
                times[name].append(timed(lambda: seg.segment(frame)))
            i += 1
        fps = {name: round(1 / statistics.median(v), 3) for name, v in times.items()}
        entry = {"threads": threads, "frames_each": len(times["torch"]), "fps": fps,
                 "frame_s": {name: stats(v) for name, v in times.items()},
                 "ratio_onnxruntime_over_torch": round(fps["onnxruntime"] / fps["torch"], 3),
                 "ratio_best": round(min(times["torch"]) / min(times["onnxruntime"]), 3),
                 "stages_ms": {"torch": stage_times(seg_torch, frames[0], 3 if model_name != "vit_b" else 1),
                               "onnxruntime": stage_times(seg_onnx, frames[0], 3 if model_name != "vit_b" else 1)}}
        entry["meets_target"] = entry["ratio_onnxruntime_over_torch"] >= TARGET_RATIO
        row["per_threads"].append(entry)
    torch.set_num_threads(threads_list[0])
    row["parity"] = [parity(seg_torch.segment(f), PartSegmenter(OnnxRunner(exported.directory, "cpu", threads=threads_list[0]),
                                                                seg_torch.class_names, settings=seg_torch.settings).segment(f))
                     for f in frames]
    batch = sam_input_batch([seg_torch.transform.resize_image(frames[0])[0]], seg_torch.runner.image_size)
    levels = {}
    for level in OPTIMIZATION_LEVELS:  # why: what each optimisation level buys on the encoder
        runner = OnnxRunner(exported.directory, "cpu", threads=threads_list[0], optimization=level)
        runner.encode(batch)
        levels[level] = round(statistics.median(timed(lambda: runner.encode(batch)) for _ in range(3 if model_name != "vit_b" else 1)) * 1000, 2)
    with torch.inference_mode():
        seg_torch.runner.encode(batch)
        levels["torch"] = round(statistics.median(timed(lambda: seg_torch.runner.encode(batch)) for _ in range(3 if model_name != "vit_b" else 1)) * 1000, 2)
    row["encoder_ms_by_optimisation_1_thread"] = levels
    return row


def node_fps(backend: str, onnx_dir: str, seconds: float, threads: int) -> dict:
    """part_seg_node over loopback DDS on the embedded model, CPU, fed 640x480 at 30 Hz: answered frames/s."""
    from cyclonedds.domain import Domain

    from bench_node import Camera
    from node_process import NodeProcess  # test/node_process.py (common.py puts test/ on sys.path)
    from wps_sam_ros.dds import LOOPBACK_CONFIG

    domain_id = 100 + (os.getpid() + (backend == "onnxruntime")) % 50
    os.environ["CYCLONEDDS_URI"] = LOOPBACK_CONFIG
    params = {"device": "cpu", "backend": backend, "onnx_threads": threads, "diagnostics_period": 0.5}
    if onnx_dir:
        params.update(onnx_dir=onnx_dir, onnx_providers="cpu")
    node = NodeProcess(params, domain_id, threads=threads).start()
    domain = Domain(domain_id, LOOPBACK_CONFIG)
    try:
        camera = Camera(domain_id)
        camera.wait_matched()
        images = camera_frames("embedded")
        start, sent = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            camera.publish(images[sent % len(images)])
            sent += 1
            time.sleep(max(0.0, start + sent / 30.0 - time.monotonic()))
        time.sleep(1.2)
        diag = camera.last_diagnostics()
    finally:
        node.stop(timeout=15)
        del domain
    with camera.lock:
        arrivals = sorted(a for a, _ in camera.arrivals)
    warm = arrivals[len(arrivals) // 5:]  # the first fifth: start-up
    fps = (len(warm) - 1) / ((warm[-1] - warm[0]) / 1e9) if len(warm) > 1 else 0.0
    return {"backend": backend, "frames_sent": sent, "answered": len(arrivals), "processed_fps": round(fps, 2),
            "node_inference_ms_mean": diag.get("inference_ms_mean"), "provider": diag.get("provider")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["embedded", "vit_t"], help="embedded, tiny, vit_t, vit_b, ...")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=20.0, help="interleaved timing per model and thread count")
    ap.add_argument("--node-seconds", type=float, default=20.0, help="node feeding per backend (0 = skip the node)")
    ap.add_argument("--parity-only", action="store_true", help="export + one frame per backend + parity (vit_b)")
    args = ap.parse_args()
    info = machine()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        rows = [compare(name, args.threads, args.seconds, Path(tmp), args.parity_only) for name in args.models]
        node = []
        if args.node_seconds > 0:
            from wps_sam_core.embedded import load_embedded_segmenter

            seg = load_embedded_segmenter("cpu")
            onnx_dir = Path(tmp) / "node_embedded"
            export_onnx(seg.model, seg.class_names, onnx_dir, sam_type=seg.sam_type, description=seg.description,
                        caveat=seg.caveat)
            node = [node_fps("torch", "", args.node_seconds, 1), node_fps("onnxruntime", str(onnx_dir), args.node_seconds, 1)]
    result = {"benchmark": "backends", "image_hw": [480, 640], "kept_queries_random_models": KEPT, **info,
              "onnxruntime": __import__("onnxruntime").__version__, "models": rows, "target_ratio": TARGET_RATIO}
    if node:
        result["node_embedded_cpu_1_thread"] = node
        result["node_ratio_onnxruntime_over_torch"] = round(node[1]["processed_fps"] / max(node[0]["processed_fps"], 1e-9), 3)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    emit(result)


if __name__ == "__main__":
    main()
