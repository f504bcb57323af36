"""P2: PartSegmenter per-frame cost beyond the frozen image encoder (vit_b, CPU, 640x480) -> one JSON line.

Side by side in one process, same weights, interleaved rounds (so load drift hits both alike):
  encoder   SAM's image encoder alone on the preprocessed 1024-px input (the floor of any frozen-SAM method)
  overhead  everything else PartSegmenter does per frame: resize/normalise/pad, prompter, keep rule,
            ONE mask-decoder call for the kept queries, mask upsampling, label/instance maps
The overhead is timed directly (many repeats) rather than as the difference of two noisy ~minute-long
frame times; one full `segment()` per round, right after the encoder alone, checks frame ~= encoder + overhead.

Random prompter weights keep every query a part (no-object logit pushed down) and `max_instances`
sets how many are decoded: 5 is a realistic frame, 25 (all queries) the worst case / naive decode.
Target: overhead <= 10% of the encoder.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from common import emit, machine, set_threads, stats, timed

from wps_sam_core.modeling.prompter import PrompterConfig
from wps_sam_core.modeling.sam import load_sam
from wps_sam_core.modeling.wpssam import WPSSAM
from wps_sam_core.preprocess import normalize_and_pad, to_rgb_uint8
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings

TARGET_OVERHEAD = 0.10


def make_segmenter(sam_type: str, num_classes: int) -> PartSegmenter:
    torch.manual_seed(0)
    sam = load_sam(sam_type)
    model = WPSSAM.create(sam, PrompterConfig(num_classes=num_classes, prompt_dim=sam.prompt_encoder.embed_dim))
    with torch.no_grad():
        model.prompter.class_head.bias[-1] = -20.0  # every query a part: the keep count is max_instances
    return PartSegmenter(model, [f"part_{i}" for i in range(num_classes)], device="cpu",
                         settings=SegmenterSettings(score_threshold=0.0))


def scene(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    image[h // 4: h // 2, w // 5: w // 2] = (200, 40, 40)
    return image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sam-type", default="vit_b")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=2, help="encoder timings (each round also times every overhead)")
    ap.add_argument("--repeats", type=int, default=3, help="overhead timings per kept count per round")
    ap.add_argument("--kept", type=int, nargs="+", default=[5, 25])
    ap.add_argument("--num-classes", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    ap.add_argument("--no-frame", action="store_true", help="skip the full segment() consistency check")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    info = machine()
    seg = make_segmenter(args.sam_type, args.num_classes)
    model = seg.model
    image = scene(args.height, args.width)

    def preprocess():
        resized, geometry = seg.transform.resize_image(to_rgb_uint8(image))
        return normalize_and_pad(model.sam, [resized]), [geometry]

    batch, geometries = preprocess()
    with torch.inference_mode():
        embedding = model.sam.image_encoder(batch)  # warm-up, and the embedding the overhead runs on
    encoder_s: list[float] = []
    preprocess_s: list[float] = []
    overhead_s = {k: [] for k in args.kept}
    prompter_s: list[float] = []
    decode_s = {k: [] for k in args.kept}
    kept_seen = {}
    frame_ratios: list[float] = []
    for _ in range(args.rounds):
        with torch.inference_mode():
            encoder_s.append(timed(lambda: model.sam.image_encoder(batch)))
        if not args.no_frame:  # a whole frame right after the encoder alone: paired, so drift cancels
            seg.update_settings(max_instances=min(args.kept))
            frame_ratios.append(timed(lambda: seg.segment(image)) / encoder_s[-1])
        for k in args.kept:
            seg.update_settings(max_instances=k)
            for _ in range(args.repeats):
                preprocess_s.append(timed(preprocess))
                overhead_s[k].append(timed(lambda: seg.segment_embeddings(embedding, geometries)))
            with torch.inference_mode():  # breakdown: prompter (+ SAM's prompt encoder for box/point heads), one decoder call
                out = model(embedding)
                prompter_s.append(timed(lambda: model(embedding)))
                image_index, query_index, _, _ = seg._select(out.logits, seg.settings)
                kept_seen[k] = int(len(image_index))
                tokens = out.tokens[image_index, query_index]
                decode_s[k].append(timed(lambda: model.decode(embedding, image_index, tokens)))
    enc = stats(encoder_s)
    pre = stats(preprocess_s)
    per_kept = []
    for k in args.kept:
        over = stats(overhead_s[k])
        ratio = (pre["median"] + over["median"]) / enc["median"]
        per_kept.append({
            "kept_queries": kept_seen[k], "overhead_s": over, "decode_s": stats(decode_s[k]),
            "overhead_ratio": round(ratio, 4),
            "overhead_ratio_best": round((pre["min"] + over["min"]) / enc["min"], 4),
            "meets_target": ratio <= TARGET_OVERHEAD,
        })
    result = {
        "benchmark": "P2_infer", "sam_type": args.sam_type, "image_hw": [args.height, args.width],
        "num_queries": model.prompter.cfg.num_queries, "threads": threads, **info,
        "encoder_s": enc, "preprocess_s": pre, "prompter_s": stats(prompter_s), "per_kept": per_kept,
        "target_overhead_ratio": TARGET_OVERHEAD,
    }
    if len(args.kept) >= 2:  # overhead is affine in the kept count (one decoder pass per query): where is 10%?
        ks = [entry["kept_queries"] for entry in per_kept]
        ratios = [entry["overhead_ratio"] for entry in per_kept]
        slope, intercept = np.polyfit(ks, ratios, 1)
        result["per_query_ratio"] = round(float(slope), 5)
        result["kept_queries_at_target"] = round(float((TARGET_OVERHEAD - intercept) / slope), 1) if slope > 0 else None
    if frame_ratios:  # consistency check, one pair per round: noisier than the direct overhead timing
        result["frame_check"] = {"kept_queries": min(args.kept),
                                 "frame_over_encoder_per_round": [round(r, 4) for r in frame_ratios]}
    emit(result)


if __name__ == "__main__":
    main()
