"""PartSegmenter: RGB image(s) in, labelled part masks out (the inference API).

One pass per batch: SAM encoder -> prompter -> keep confident queries -> ONE batched
mask-decoder call for all kept queries of all images -> same-class duplicates merged (dedup_iou,
on the low-res masks) -> masks at original size -> overlaps resolved -> label map, instance map
and instance list, all three from the same kept masks.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .backends import BACKENDS, DEFAULT_BACKEND, DEFAULT_PROVIDERS
from .backends.base import Runner
# settings and device rules live in settings.py and backends/torch_runner.py; still importable from here
from .backends.torch_runner import DEFAULT_DEVICE, DEFAULT_PRECISION, PRECISIONS, TorchRunner, resolve_device  # noqa: F401
from .errors import WpsSamError
from .modeling.wpssam import WPSSAM
from .postprocess.dedup import deduplicate, merge_duplicates
from .postprocess.masks import upscale_masks
from .postprocess.objects import PartObject, derive_object_classes, with_objects
from .preprocess import ImageGeometry, SamTransform, sam_input_batch, to_rgb_uint8
from .settings import DEDUP_METHOD, DEFAULT_DEDUP_IOU, OVERLAP_ORDERS, SegmenterSettings  # noqa: F401

log = logging.getLogger(__name__)


@dataclass
class PartInstance:
    instance_id: int  # value in PartSegmentation.instance_ids (1..n, by descending score)
    class_id: int  # value in PartSegmentation.labels (1..num_classes)
    class_name: str
    score: float  # class probability of the query
    box_xyxy: tuple[float, float, float, float]  # original pixels, x1/y1 exclusive (pixel edges)
    mask: np.ndarray = field(repr=False)  # HxW bool, the visible (overlap-resolved) pixels
    iou_prediction: float = 0.0  # SAM's own mask-quality estimate
    object_id: int = 0  # the object it belongs to: PartSegmentation.objects (postprocess/objects.py); 0 = not linked
    object_class: str = ""  # that object's class (the class-to-object table); "" = not linked

    def to_json(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id, "class_id": self.class_id, "class_name": self.class_name,
            "score": round(self.score, 6), "box_xyxy": [round(v, 2) for v in self.box_xyxy],
            "area": int(self.mask.sum()), "iou_prediction": round(self.iou_prediction, 6),
            "object_id": self.object_id, "object_class": self.object_class,
        }


@dataclass
class PartSegmentation:
    labels: np.ndarray  # HxW uint8 (uint16 past 255 classes): 0 background, k = class k
    instance_ids: np.ndarray  # HxW uint16: 0 none, i = instances[i - 1]
    instances: list[PartInstance]
    class_names: list[str]  # class k is class_names[k - 1]
    objects: list[PartObject] = field(default_factory=list)  # the parts' objects (postprocess/objects.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "image_size": list(self.labels.shape),
            "class_names": self.class_names,
            "instances": [inst.to_json() for inst in self.instances],
            "objects": [obj.to_json() for obj in self.objects],
        }


def label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if num_classes <= 255 else np.dtype(np.uint16)


@dataclass
class InstanceMasks:
    """One image's part masks before painting: K x H x W bool masks that may overlap (after duplicate
    suppression), with class ids (1-based), scores and SAM's IoU predictions. `assemble` paints them into
    the PartSegmentation; the instance metrics score these (painting hides duplicates)."""

    masks: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    ious: np.ndarray

    def assemble(self, class_names: list[str], overlap: str = OVERLAP_ORDERS[0]) -> "PartSegmentation":
        return assemble(self.masks, self.class_ids, self.scores, self.ious, class_names, overlap)


def assemble(
    masks: np.ndarray, class_ids: np.ndarray, scores: np.ndarray, ious: np.ndarray, class_names: list[str],
    overlap: str = OVERLAP_ORDERS[0],
) -> PartSegmentation:
    """K x H x W boolean masks -> label map, instance map, instances (ordered by descending score);
    overlaps go to the smaller mask (overlap "smaller_on_top") or the higher score ("score")."""
    k, h, w = masks.shape
    order = np.argsort(-scores, kind="stable")
    if overlap == "smaller_on_top":
        areas = masks.reshape(k, h * w).sum(1)
        paint = np.lexsort((scores, -areas))  # largest first; among equal areas the lower score first
    else:
        paint = order[::-1]  # lowest score first, so the highest score ends on top
    owner = np.full((h, w), -1, dtype=np.int32)
    for rank in paint:
        owner[masks[rank]] = rank
    labels = np.zeros((h, w), dtype=label_dtype(len(class_names)))
    instance_ids = np.zeros((h, w), dtype=np.uint16)
    instances: list[PartInstance] = []
    for rank in order:
        visible = owner == rank
        if not visible.any():
            continue  # fully hidden by higher-scoring parts: not an instance of this frame
        inst_id = len(instances) + 1
        ys, xs = np.nonzero(visible)
        class_id = int(class_ids[rank])
        labels[visible] = class_id
        instance_ids[visible] = inst_id
        instances.append(PartInstance(
            inst_id, class_id, class_names[class_id - 1], float(scores[rank]),
            (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
            visible, float(ious[rank]),
        ))
    return PartSegmentation(labels, instance_ids, instances, list(class_names))


class PartSegmenter:
    """Segment object parts in RGB images with a WPS-SAM model, on any backend (backends/: torch, onnxruntime)."""

    dedup_method = DEDUP_METHOD  # postprocess.dedup.DEDUP_METHODS; an instance may set another (measurements)

    def __init__(
        self,
        model: WPSSAM | Runner,
        class_names: Sequence[str],
        device: str = DEFAULT_DEVICE,
        precision: str = DEFAULT_PRECISION,
        settings: SegmenterSettings | None = None,
        *,
        sam_type: str = "",
        description: str = "",
        caveat: str = "",
        object_classes: Sequence[str] | None = None,
    ) -> None:
        """`model`: a WPSSAM (run by PyTorch on `device` in `precision`) or a backend's Runner (which brings its
        own device and precision); `sam_type`: the SAM registry name of `model.sam` ("" unknown); `description`: where the weights
        came from, for logs and diagnostics; `caveat`: what a user must know about these weights (the
        embedded demo model), else ""; `object_classes`: the object class of each part class (the
        class-to-object table), None = derived from the class names (postprocess/objects.py)."""
        self.runner = model if isinstance(model, Runner) else TorchRunner(model, device, precision)
        if len(class_names) != self.runner.num_classes:
            raise WpsSamError(f"{len(class_names)} class names for a {self.runner.num_classes}-class prompter")
        self.device, self.precision = self.runner.device, self.runner.precision
        self.class_names = list(class_names)
        self.object_classes = tuple(derive_object_classes(class_names) if object_classes is None else object_classes)
        if len(self.object_classes) != len(self.class_names):
            raise WpsSamError(f"{len(self.object_classes)} object classes for {len(self.class_names)} part classes")
        self.transform = SamTransform(self.runner.image_size)
        self._settings = (settings or SegmenterSettings()).validated(self.class_names)
        self._settings_lock = threading.Lock()
        self.sam_type = sam_type
        self.description = description
        self.caveat = caveat

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_checkpoints(
        cls,
        prompter_checkpoint: str | Path,
        sam_type: str | None = None,
        sam_checkpoint: str | Path | None = None,
        device: str = DEFAULT_DEVICE,
        precision: str = DEFAULT_PRECISION,
        settings: SegmenterSettings | None = None,
        *,
        description: str = "",
        caveat: str = "",
        object_classes: Sequence[str] | None = None,
        allow_sam_mismatch: bool = False,
        sam_flag: str = "--sam-checkpoint",
        mismatch_flag: str = "--allow-sam-mismatch",
    ) -> "PartSegmenter":
        """Prompter checkpoint + SAM: `sam_checkpoint` an official SAM checkpoint file, or "random"
        (modeling.sam.RANDOM_WEIGHTS) for random weights; nothing is refused. `sam_type` None = the prompter's.

        SAM weights other than those the prompter records (sha256 of its SAM file) are refused unless
        `allow_sam_mismatch`. `sam_flag` / `mismatch_flag` name the user's settings in the errors (CLI flags,
        node parameters; mismatch_flag "" = no override offered). `description` "" names the files;
        `object_classes` None = the checkpoint's table (length checked by the constructor either way)."""
        from .checkpoint import load_prompter_checkpoint
        from .io_utils import sha256_file
        from .modeling.sam import get_sam_config, load_sam, sam_weights_path

        ckpt = load_prompter_checkpoint(prompter_checkpoint)
        sam_type = sam_type or ckpt.sam_type
        ckpt.check_compatible(sam_type, get_sam_config(sam_type).image_size)
        sam_path = sam_weights_path(sam_checkpoint, sam_flag)
        sam = load_sam(sam_type, sam_path)  # names a missing or unfit file before it is hashed
        ckpt.check_sam_weights(prompter_checkpoint, sam_path, sha256_file(sam_path) if sam_path else "",
                               allow_sam_mismatch, mismatch_flag)
        model = WPSSAM(sam, ckpt.build_prompter(sam.prompt_encoder.image_embedding_size[0]))
        description = description or (
            f"prompter {prompter_checkpoint} on SAM {sam_type} ({sam_path or 'random weights'})")
        return cls(model, ckpt.class_names, device, precision, settings,
                   sam_type=sam_type, description=description, caveat=caveat,
                   object_classes=ckpt.object_classes if object_classes is None else object_classes)

    # ---- settings ------------------------------------------------------------------------
    @property
    def settings(self) -> SegmenterSettings:
        return self._settings

    def update_settings(self, **changes: Any) -> SegmenterSettings:
        """Validate and swap in new settings atomically; invalid values raise and change nothing."""
        with self._settings_lock:
            if "class_filter" in changes:
                value = changes["class_filter"] or ()
                changes["class_filter"] = (value,) if isinstance(value, str) else tuple(value)  # not its letters
            new = replace(self._settings, **changes).validated(self.class_names)
            self._settings = new
            return new

    # ---- backend -------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def model(self) -> WPSSAM:
        """The PyTorch model (torch backend): teacher prompts of the baselines, export, training tools."""
        if not isinstance(self.runner, TorchRunner):
            raise WpsSamError(f"this needs the PyTorch model (SAM's prompt encoder, the prompter's weights); the "
                              f"segmenter runs on {self.backend}: use --backend torch (node: backend: torch)")
        return self.runner.model

    # ---- inference -----------------------------------------------------------------------
    def segment(self, image: np.ndarray) -> PartSegmentation:
        return self.segment_batch([image])[0]

    def embed(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[ImageGeometry]]:
        """Images -> (B x C x s x s SAM embeddings, geometries); the frozen-encoder half of the pipeline."""
        rgbs = [to_rgb_uint8(img, f"image {i}") for i, img in enumerate(images)]
        resized, geometries = zip(*(self.transform.resize_image(rgb) for rgb in rgbs))
        with torch.inference_mode():
            return self.runner.encode(sam_input_batch(list(resized), self.runner.image_size)), list(geometries)

    @torch.inference_mode()
    def segment_batch(self, images: Sequence[np.ndarray]) -> list[PartSegmentation]:
        if len(images) == 0:
            return []
        return self.segment_embeddings(*self.embed(images))

    @torch.inference_mode()
    def segment_embeddings(self, embeddings: torch.Tensor, geometries: Sequence[ImageGeometry]) -> list[PartSegmentation]:
        """The prompter half of the pipeline, on embeddings from `embed` (or a cache)."""
        settings = self._settings  # one snapshot for the whole batch
        return [self.assemble(m, settings) for m in self.instance_masks(embeddings, geometries, settings)]

    def assemble(self, masks: InstanceMasks, settings: SegmenterSettings | None = None) -> PartSegmentation:
        """Paint one image's masks (settings.overlap) and link the parts to their objects (object_classes)."""
        seg = masks.assemble(self.class_names, (settings or self._settings).overlap)
        return with_objects(seg, self.object_classes)

    @torch.inference_mode()
    def instance_masks(self, embeddings: torch.Tensor, geometries: Sequence[ImageGeometry],
                       settings: SegmenterSettings | None = None) -> list[InstanceMasks]:
        """segment_embeddings without the painting: each image's kept, deduplicated, overlapping masks."""
        settings = settings or self._settings
        logits, tokens = self.runner.prompt(embeddings)
        image_index, query_index, class_ids, scores = self._select(logits, settings)
        tokens = tokens[image_index, query_index]
        return self.decode_instances(embeddings, geometries, image_index, tokens, class_ids, scores, settings)

    @torch.inference_mode()
    def decode_prompts(self, embeddings: torch.Tensor, geometries: Sequence[ImageGeometry], image_index: torch.Tensor,
                       tokens: torch.Tensor, class_ids: torch.Tensor, scores: torch.Tensor | None = None,
                       settings: SegmenterSettings | None = None) -> list[PartSegmentation]:
        """Decode M prompt-token pairs over the batch in ONE mask-decoder call and build the results.

        Also serves the baselines (SAM prompted with ground-truth boxes/points): `class_ids` are
        1-based; `scores` None ranks overlapping masks by SAM's IoU prediction.
        """
        settings = settings or self._settings
        return [self.assemble(m, settings) for m in
                self.decode_instances(embeddings, geometries, image_index, tokens, class_ids, scores, settings)]

    @torch.inference_mode()
    def decode_instances(self, embeddings: torch.Tensor, geometries: Sequence[ImageGeometry], image_index: torch.Tensor,
                         tokens: torch.Tensor, class_ids: torch.Tensor, scores: torch.Tensor | None = None,
                         settings: SegmenterSettings | None = None) -> list[InstanceMasks]:
        """decode_prompts without the painting: per image the deduplicated masks at original size."""
        settings = settings or self._settings
        low_res = ious = None
        if len(image_index):
            low_res, ious = self.runner.decode(embeddings, image_index, tokens)
            scores = ious if scores is None else scores
        return [self._postprocess(i, geometries[i], image_index, low_res, ious, class_ids, scores, settings)
                for i in range(len(geometries))]

    def _select(self, logits: torch.Tensor, settings: SegmenterSettings):
        """Queries whose best class is a part (not no-object), above threshold, top-k per image."""
        probs = logits.softmax(-1)
        num_classes = probs.shape[-1] - 1
        part_probs = probs[..., :num_classes]
        if settings.class_filter:
            allowed = torch.zeros(num_classes, dtype=torch.bool, device=probs.device)
            allowed[[self.class_names.index(n) for n in settings.class_filter]] = True
            part_probs = part_probs.masked_fill(~allowed, 0.0)
        scores, classes = part_probs.max(-1)
        keep = (probs.argmax(-1) != num_classes) & (scores >= settings.score_threshold) & (scores > 0)
        if settings.class_filter:  # the filter may not promote a query whose best class is filtered out
            keep &= probs[..., :num_classes].argmax(-1) == classes
        scores = scores.masked_fill(~keep, -1.0)
        k = min(settings.max_instances, scores.shape[1])
        top_scores, top_q = scores.topk(k, dim=1)
        img_idx = torch.arange(scores.shape[0], device=scores.device)[:, None].expand(-1, k)
        valid = top_scores >= 0
        image_index, query_index = img_idx[valid], top_q[valid]
        return image_index, query_index, classes[image_index, query_index] + 1, top_scores[valid]

    def _deduplicate(self, logits: torch.Tensor, class_ids: torch.Tensor, scores: torch.Tensor,
                     settings: SegmenterSettings) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept indices, their K' x 1 x h x w logits): one part, one instance (postprocess/dedup.py)."""
        if self.dedup_method == "merge":  # each kept mask becomes the union of the duplicates it absorbs
            return merge_duplicates(logits, class_ids, scores, settings.dedup_iou, settings.mask_threshold)
        keep = deduplicate(logits[:, 0], class_ids, scores, settings.dedup_iou, method=self.dedup_method,
                           mask_threshold=settings.mask_threshold)
        return keep, logits[keep]

    def _postprocess(self, i, geometry: ImageGeometry, image_index, low_res, ious, class_ids, scores,
                     settings: SegmenterSettings) -> InstanceMasks:
        h, w = geometry.original_size
        sel = (image_index.cpu() == i).nonzero().flatten() if low_res is not None else torch.zeros(0, dtype=torch.long)
        if len(sel) == 0:
            return InstanceMasks(np.zeros((0, h, w), bool), np.zeros(0, int), np.zeros(0), np.zeros(0))
        class_ids = class_ids.cpu()
        sel_dev = sel.to(low_res.device)
        logits = low_res[sel_dev]  # K x 1 x h x w
        if settings.dedup_iou > 0 and len(sel) > 1:  # before upscaling: one batched op on the low-res masks
            keep, logits = self._deduplicate(logits, class_ids[sel], scores[sel_dev.to(scores.device)], settings)
            sel, sel_dev = sel[keep.cpu()], sel_dev[keep.to(sel_dev.device)]
        masks = upscale_masks(logits, self.runner.image_size, geometry.input_size, geometry.original_size)
        masks = (masks[:, 0] > settings.mask_threshold).cpu().numpy()
        return InstanceMasks(masks, class_ids[sel].numpy(), scores[sel_dev.to(scores.device)].cpu().numpy(),
                             ious[sel_dev].cpu().numpy())


def load_segmenter(
    prompter: str | Path | None = None,
    sam_type: str | None = None,
    sam_checkpoint: str | Path | None = None,
    device: str = DEFAULT_DEVICE,
    precision: str = DEFAULT_PRECISION,
    settings: SegmenterSettings | None = None,
    *,
    allow_sam_mismatch: bool = False,
    sam_flag: str = "--sam-checkpoint",
    mismatch_flag: str = "--allow-sam-mismatch",
    backend: str = DEFAULT_BACKEND,
    onnx_dir: str | Path = "",
    onnx_providers: str = DEFAULT_PROVIDERS,
    onnx_threads: int = 0,
) -> PartSegmenter:
    """The one rule for choosing the model, shared by the CLI and the ROS node.

    A prompter checkpoint runs on SAM `sam_type` (empty: the prompter's) with the weights of
    `sam_checkpoint`: a SAM checkpoint file, or "random" for random weights; empty is refused (see
    PartSegmenter.from_checkpoints, also for the SAM-hash check and the flag names). No prompter runs the
    embedded default model, which brings its own SAM, so a SAM checkpoint or type without a prompter is refused.

    `backend` onnxruntime runs the graphs in `onnx_dir` (checked against the prompter, if one is named), or
    this model exported on first use into the cache (backends/onnx_loading.py), on `onnx_providers` with
    `onnx_threads` intra-op threads; `device` cpu without providers means the CPU provider, cuda:N the GPU.
    """
    if backend not in BACKENDS:
        raise WpsSamError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "onnxruntime":
        from .backends.onnx_loading import load_onnx_segmenter

        def torch_segmenter() -> PartSegmenter:  # the same rule and checks, for the export on first use
            return load_segmenter(prompter, sam_type, sam_checkpoint, "cpu", "fp32", settings,
                                  allow_sam_mismatch=allow_sam_mismatch, sam_flag=sam_flag, mismatch_flag=mismatch_flag)

        return load_onnx_segmenter(prompter, sam_type, sam_checkpoint, device, precision, settings, onnx_dir,
                                   onnx_providers, onnx_threads, torch_segmenter)
    if onnx_dir:
        raise WpsSamError(f"onnx_dir {onnx_dir} is for backend onnxruntime; the backend is {backend}")
    if prompter:
        return PartSegmenter.from_checkpoints(prompter, sam_type or None, sam_checkpoint or None, device,
                                              precision, settings, allow_sam_mismatch=allow_sam_mismatch,
                                              sam_flag=sam_flag, mismatch_flag=mismatch_flag)
    if sam_checkpoint or sam_type:
        raise WpsSamError("a SAM checkpoint or SAM type needs a prompter checkpoint (--prompter, prompter_checkpoint):"
                          " the embedded default model brings its own SAM")
    from .embedded import load_embedded_segmenter

    return load_embedded_segmenter(device, precision, settings)
