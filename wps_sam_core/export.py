"""ONNX export of a WPS-SAM model as three graphs, for onnxruntime / TensorRT deployment.

  image_encoder.onnx  image (B x 3 x S x S, normalised and padded) -> embedding (B x C x s x s)
  prompter.onnx       embedding -> logits (B x Q x K+1), tokens (B x Q x 2 x C)
  mask_decoder.onnx   embedding, image_index (M), tokens (M x 2 x C) -> low_res_masks (M x 1 x 4s x 4s), iou (M)

Keeping queries (softmax, score threshold, top-k) is a few lines of host code between the prompter
and the decoder (`select_queries` below mirrors PartSegmenter's rule), so the decoder graph takes a
*dynamic* number M of kept queries — typically a handful — and the encoder runs once per frame.
After the decoder, `merge_duplicates` (host code too) merges same-class duplicates on the low-res
masks as PartSegmenter does (dedup_iou). Resize/normalise before and mask upsampling after are SAM's
own (`export.json` records the numbers).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .errors import WpsSamError
from .io_utils import atomic_path, atomic_write_text
from .modeling.sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from .modeling.wpssam import WPSSAM
from .postprocess import dedup
from .segmenter import DEDUP_METHOD, DEFAULT_DEDUP_IOU

DEFAULT_OPSET = 17
ENCODER_FILE, PROMPTER_FILE, DECODER_FILE, METADATA_FILE = (
    "image_encoder.onnx", "prompter.onnx", "mask_decoder.onnx", "export.json")


class _PrompterGraph(nn.Module):
    def __init__(self, model: WPSSAM) -> None:
        super().__init__()
        self.model = model  # box/point heads need SAM's prompt encoder to make the tokens

    def forward(self, embedding: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(embedding)
        return out.logits, out.tokens


class _DecoderGraph(nn.Module):
    """`WPSSAM.decode`: kept queries of several images in one mask-decoder pass."""

    def __init__(self, model: WPSSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedding: Tensor, image_index: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.decode(embedding, image_index, tokens)


@dataclass(frozen=True)
class ExportedModel:
    directory: Path
    files: dict[str, Path]  # "image_encoder" / "prompter" / "mask_decoder" -> path
    metadata: dict


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict[str, dict[int, str]], opset: int) -> None:
    # eval first: the exporter restores the wrapper's own mode afterwards, and a wrapper made in training mode
    # (nn.Module's default) would switch the caller's model to training (prompter dropout on) behind its back
    module.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape arithmetic
        # The TorchScript-based exporter needs no extra package (the dynamo one needs onnxscript).
        torch.onnx.export(module, args, str(tmp), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False)


def export_onnx(model: WPSSAM, class_names: Sequence[str], out_dir: str | Path, sam_type: str = "",
                opset: int = DEFAULT_OPSET, include_encoder: bool = True, fp16: bool = False, *,
                description: str = "", caveat: str = "", object_classes: Sequence[str] | None = None) -> ExportedModel:
    """Write the graphs and `export.json` to `out_dir` (each file atomically); traced in fp32 on CPU.

    `fp16`: graphs with fp16 weights and arithmetic for GPU providers (CUDA, TensorRT), fp32 inputs and
    outputs (so the host code is the same); on CPU they run slower than fp32. `description` / `caveat` /
    `object_classes`: the segmenter's, so the onnxruntime backend reports the same model (the demo caveat)."""
    if len(class_names) != model.prompter.cfg.num_classes:
        raise WpsSamError(f"{len(class_names)} class names for a {model.prompter.cfg.num_classes}-class prompter")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise WpsSamError(f"--onnx {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").float().eval()
    size = model.image_size
    side = model.sam.prompt_encoder.image_embedding_size[0]
    dim = model.sam.prompt_encoder.embed_dim
    files: dict[str, Path] = {}
    with torch.no_grad():
        embedding = torch.zeros(2, dim, side, side)
        if include_encoder:
            files["image_encoder"] = out / ENCODER_FILE
            _export(model.sam.image_encoder, (torch.zeros(1, 3, size, size),), files["image_encoder"],
                    ["image"], ["embedding"], {"image": {0: "batch"}, "embedding": {0: "batch"}}, opset)
        files["prompter"] = out / PROMPTER_FILE
        _export(_PrompterGraph(model), (embedding,), files["prompter"], ["embedding"], ["logits", "tokens"],
                {"embedding": {0: "batch"}, "logits": {0: "batch"}, "tokens": {0: "batch"}}, opset)
        files["mask_decoder"] = out / DECODER_FILE
        num_tokens = model.prompter.cfg.num_prompt_tokens
        _export(_DecoderGraph(model), (embedding, torch.tensor([0, 1, 1]), torch.zeros(3, num_tokens, dim)),
                files["mask_decoder"], ["embedding", "image_index", "tokens"], ["low_res_masks", "iou_predictions"],
                {"embedding": {0: "batch"}, "image_index": {0: "queries"}, "tokens": {0: "queries"},
                 "low_res_masks": {0: "queries"}, "iou_predictions": {0: "queries"}}, opset)
    if fp16:
        for path in files.values():
            _convert_to_fp16(path)
    metadata = {
        "format": "wps_sam_onnx", "format_version": 1, "opset": opset, "sam_type": sam_type,
        "precision": "fp16" if fp16 else "fp32", "description": description, "caveat": caveat,
        "class_names": list(class_names), "no_object_index": model.prompter.no_object_index,
        "num_queries": model.prompter.num_queries, "num_prompt_tokens": model.prompter.cfg.num_prompt_tokens,
        "image_size": size, "embedding_shape": [dim, side, side], "low_res_mask_size": 4 * side,
        "pixel_mean": list(SAM_PIXEL_MEAN), "pixel_std": list(SAM_PIXEL_STD),
        "preprocess": "resize longest side to image_size (PIL bilinear), (x - mean) / std, zero-pad bottom-right",
        "duplicates": {"method": DEDUP_METHOD, "dedup_iou": DEFAULT_DEDUP_IOU,
                       "what": "per image, on the low-res logits: same-class masks linked by mask IoU > dedup_iou "
                               "(connected components) become the best-scored one with the elementwise max of "
                               "their logits (export.merge_duplicates); 0 = off"},
        "postprocess": "bilinear to image_size^2, crop to the resized size, bilinear to the original size, > 0",
        "files": {name: path.name for name, path in files.items()},
    }
    if object_classes is not None:
        metadata["object_classes"] = list(object_classes)
    atomic_write_text(out / METADATA_FILE, json.dumps(metadata, indent=2))
    return ExportedModel(out, files, metadata)


def _convert_to_fp16(path: Path) -> None:
    """fp32 graph -> fp16 weights and arithmetic with fp32 inputs/outputs (onnxruntime's own converter, shipped
    with it: onnxruntime.transformers.float16; keep_io_types casts at the graph's edges)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about values clamped to fp16's range (none in SAM's weights)
        model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def select_queries(logits: np.ndarray, score_threshold: float, max_instances: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Host-side keep rule between the prompter and decoder graphs (PartSegmenter's, without class filter).

    logits B x Q x K+1 -> (image_index, query_index, 1-based class ids, scores), best first per image.
    """
    z = logits - logits.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    num_classes = probs.shape[-1] - 1
    scores, classes = probs[..., :num_classes].max(-1), probs[..., :num_classes].argmax(-1)
    keep = (probs.argmax(-1) != num_classes) & (scores >= score_threshold) & (scores > 0)
    image_index, query_index, class_ids, kept = [], [], [], []
    for b in range(logits.shape[0]):
        queries = np.flatnonzero(keep[b])
        queries = queries[np.argsort(-scores[b, queries], kind="stable")][:max_instances]
        image_index += [b] * len(queries)
        query_index += queries.tolist()
        class_ids += (classes[b, queries] + 1).tolist()
        kept += scores[b, queries].tolist()
    return (np.asarray(image_index, np.int64), np.asarray(query_index, np.int64),
            np.asarray(class_ids, np.int64), np.asarray(kept, np.float32))


def merge_duplicates(low_res: np.ndarray, image_index: np.ndarray, class_ids: np.ndarray, scores: np.ndarray,
                     dedup_iou: float = DEFAULT_DEDUP_IOU, mask_threshold: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Host-side duplicate merging between the decoder graph and the upsampling (PartSegmenter's "merge").

    low_res M x 1 x h x w decoder logits and the M kept queries' image_index / class ids / scores (as
    `select_queries` gives them) -> (indices of the queries kept, ascending; their K x 1 x h x w logits,
    each the union of its duplicates). dedup_iou 0 keeps everything as it is.
    """
    low_res = np.asarray(low_res, dtype=np.float32)
    keep_all, merged = [], []
    for b in np.unique(image_index):
        sel = np.flatnonzero(image_index == b)
        logits = torch.from_numpy(low_res[sel])
        if dedup_iou > 0 and len(sel) > 1:
            keep, logits = dedup.merge_duplicates(logits, torch.as_tensor(class_ids[sel]), torch.as_tensor(scores[sel]),
                                                  dedup_iou, mask_threshold)
            sel = sel[keep.numpy()]
        keep_all.append(sel)
        merged.append(logits.numpy())
    if not keep_all:
        return np.zeros(0, np.int64), low_res[:0]
    order = np.argsort(np.concatenate(keep_all), kind="stable")
    return np.concatenate(keep_all)[order].astype(np.int64), np.concatenate(merged)[order]
