"""Class-agnostic promptable-segmentation pre-training of a (tiny) SAM, the way SAM is trained.

Data: the generic-shapes world (data/shapes_world.py), rendered on the fly (a 256-px scene costs
~15 ms, far less than a training step), so every step sees new images and no part label exists
anywhere in this module. Per image, `prompts_per_image` target masks (wholes and sub-shapes) are
drawn and each gets ONE prompt: a box (tight box + SAM's noise: std 10 % of the side, capped) or a
point (uniform over the mask). All four modules of SAM are trained (image encoder, prompt encoder,
mask decoder) through the official `MaskDecoder.predict_masks`:

  box    -> the single-mask output (token 0, what `multimask_output=False` returns);
  point  -> the three multimask outputs, only the best one (lowest loss) back-propagated, as SAM
            does for ambiguous prompts; plus token 0 on the same target, because this project
            decodes single clicks with the single-mask output (evaluation/evaluate.py's GT-point baseline and
            the point-trained prompter both do);
  loss   = 20 * focal + 1 * dice (SAM's ratio) on the logits upsampled to `loss_size` (targets
           area-averaged to it), plus the MSE between SAM's IoU prediction and the true IoU of each
           supervised output.

No iterative-refinement rounds (the project never feeds masks back as prompts).

The defaults are the recipe of the shipped tiny SAM (CPU budget): boxes only (point_fraction 0).
From scratch, the model first settles on the all-background prior (~300 steps of near-zero IoU);
with half point prompts or lr 1e-3 that phase outlasted our CPU budget, so point prompts are left
out and single clicks are decoded by a model that never saw one (the GT-point rows show the cost).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from ..data.shapes_world import render_shapes
from ..io_utils import atomic_path, atomic_write_text
from ..modeling.sam import build_sam, get_sam_config, load_sam
from .trainer import lr_factor

log = logging.getLogger(__name__)

BOX, POINT = 0, 1


@dataclass(frozen=True)
class PretrainConfig:
    sam_type: str = "tiny"
    init_weights: str = ""     # start from these SAM weights (a later stage of a curriculum); "" = random init
    seed: int = 0              # model init and prompt sampling
    shapes_seed: int = 0       # the shapes world's seed (image i of the run = render_shapes(shapes_seed, i))
    steps: int = 3000          # length of the lr schedule
    stop_after: int = 0        # > 0: end after this many steps (the schedule still spans `steps`)
    images_per_step: int = 4
    prompts_per_image: int = 12
    point_fraction: float = 0.0   # share of point prompts (the rest are boxes); see the module docstring
    box_noise: float = 0.1        # std of each box coordinate's noise, as a fraction of the box side ...
    box_noise_max: float = 5.0    # ... capped in pixels (SAM: 20 px at 1024 -> 5 px at 256)
    lr: float = 5e-4              # prompt encoder + mask decoder
    encoder_lr_scale: float = 1.0  # image encoder lr = lr * this
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    focal_weight: float = 20.0
    focal_alpha: float = 0.25     # weight of positive pixels in the focal loss (< 0: no balancing)
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    loss_size: int = 64           # side the logits are upsampled to (and targets area-averaged to) for the loss
    num_threads: int = 1          # 1 is as fast as 2 on a shared 2-core machine (no OpenMP spinning)
    log_every: int = 25
    save_every: int = 200

    def to_dict(self) -> dict:
        return asdict(self)


class Prompts(NamedTuple):
    """One image's sampled prompts, one row per prompt (target = index into the image's masks)."""

    kinds: np.ndarray    # (N,) BOX or POINT
    targets: np.ndarray  # (N,) int
    boxes: np.ndarray    # (N, 4) float32 xyxy in pixel edges (rows of point prompts unused)
    points: np.ndarray   # (N, 2) float32 (x, y) pixel centres (rows of box prompts unused)


def tight_box(mask: np.ndarray) -> np.ndarray:
    """xyxy box in pixel edges (x1/y1 exclusive), the convention of COCO bboxes and the datasets."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def sample_prompts(masks: list[np.ndarray], count: int, rng: np.random.Generator, point_fraction: float = 0.5,
                   box_noise: float = 0.1, box_noise_max: float = 5.0) -> Prompts:
    """`count` prompts over `masks` (HxW bool, non-empty): targets without replacement while they last."""
    h, w = masks[0].shape
    order = rng.permutation(len(masks))
    targets = np.concatenate([order, rng.integers(0, len(masks), max(0, count - len(masks)))])[:count]
    kinds = np.where(rng.random(count) < point_fraction, POINT, BOX)
    boxes = np.zeros((count, 4), dtype=np.float32)
    points = np.zeros((count, 2), dtype=np.float32)
    for row, (kind, target) in enumerate(zip(kinds, targets)):
        mask = masks[target]
        if kind == BOX:
            box = tight_box(mask)
            side = np.array([box[2] - box[0], box[3] - box[1]] * 2, dtype=np.float32)
            noise = np.clip(rng.normal(0.0, 1.0, 4) * box_noise * side, -box_noise_max, box_noise_max)
            box = box + noise
            box[[0, 2]] = np.clip(np.sort(box[[0, 2]]), 0, w)
            box[[1, 3]] = np.clip(np.sort(box[[1, 3]]), 0, h)
            boxes[row] = box
        else:
            ys, xs = np.nonzero(mask)
            pick = int(rng.integers(len(xs)))
            points[row] = (xs[pick] + 0.5, ys[pick] + 0.5)
    return Prompts(kinds, targets, boxes, points)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Per-mask sigmoid focal loss (mean over pixels), as in SAM/DETR. logits, targets: N x H x W."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    prob = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    return 1 - (2 * (prob * targets).sum(1) + 1) / (prob.sum(1) + targets.sum(1) + 1)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    pred = (logits > 0).flatten(1).float()
    targets = targets.flatten(1).float()
    inter = (pred * targets).sum(1)
    union = pred.sum(1) + targets.sum(1) - inter
    return inter / union.clamp(min=1)


def prompt_tokens(sam: Sam, prompts: Prompts, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse and dense prompt embeddings for one image's prompts (input frame = image pixels)."""
    is_box = torch.as_tensor(prompts.kinds == BOX)
    sparse = []
    if is_box.any():
        boxes = torch.as_tensor(prompts.boxes, device=device)[is_box]
        sparse.append((is_box, sam.prompt_encoder(points=None, boxes=boxes, masks=None)[0]))
    if (~is_box).any():
        pts = torch.as_tensor(prompts.points, device=device)[~is_box][:, None, :]
        labels = torch.ones(pts.shape[0], 1, dtype=torch.int, device=device)
        sparse.append((~is_box, sam.prompt_encoder(points=(pts, labels), boxes=None, masks=None)[0]))
    # both kinds give 2 tokens (box corners / point + SAM's padding point): one decoder call for all
    tokens = torch.zeros(len(prompts.kinds), 2, sam.prompt_encoder.embed_dim, device=device)
    for rows, part in sparse:
        tokens = tokens.index_put((rows.nonzero()[:, 0].to(device),), part)
    dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
        len(prompts.kinds), -1, *sam.prompt_encoder.image_embedding_size)
    return tokens, dense


def image_losses(sam: Sam, embedding: torch.Tensor, prompts: Prompts, masks: torch.Tensor,
                 cfg: PretrainConfig) -> dict[str, torch.Tensor]:
    """Summed (not averaged) losses of one image's prompts; masks: M x S x S targets at cfg.loss_size."""
    device = embedding.device
    sparse, dense = prompt_tokens(sam, prompts, device)
    low_res, iou_pred = sam.mask_decoder.predict_masks(
        embedding[None], sam.prompt_encoder.get_dense_pe(), sparse, dense)  # N x 4 x h x w, N x 4
    is_point = torch.as_tensor(prompts.kinds == POINT, device=device)
    # only the supervised outputs are upsampled: token 0 of every prompt, tokens 1-3 of point prompts
    rows = torch.cat([torch.arange(len(is_point), device=device), is_point.nonzero()[:, 0].repeat_interleave(3)])
    cols = torch.cat([torch.zeros(len(is_point), dtype=torch.long, device=device),
                      torch.tensor([1, 2, 3], device=device).repeat(int(is_point.sum()))])
    size = masks.shape[-2:]
    logits = F.interpolate(low_res[rows, cols][:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    target = masks[torch.as_tensor(prompts.targets, device=device)[rows]]
    focal, dice = focal_loss(logits, target, cfg.focal_alpha), dice_loss(logits, target)
    with torch.no_grad():
        true_iou = mask_iou(logits, target > 0.5)
    seg = cfg.focal_weight * focal + cfg.dice_weight * dice
    iou_err = (iou_pred[rows, cols] - true_iou) ** 2
    n = len(is_point)
    # per point prompt, back-propagate only the multimask output that fits its target best
    multi_seg = seg[n:].view(-1, 3)
    best = multi_seg.detach().argmin(1, keepdim=True)
    return {
        "seg": seg[:n].sum() + multi_seg.gather(1, best).sum(),
        "iou": iou_err[:n].sum() + iou_err[n:].view(-1, 3).gather(1, best).sum(),
        "focal": focal[:n].sum().detach(), "dice": dice[:n].sum().detach(), "miou": true_iou[:n].sum(),
        "count": torch.tensor(float(n)),
    }


def target_masks(masks: list[np.ndarray], size: int, device: torch.device) -> torch.Tensor:
    """HxW bool masks -> M x size x size float coverage (area average; exact when size = H)."""
    stacked = torch.as_tensor(np.stack(masks), device=device).float()[:, None]
    if stacked.shape[-1] != size:
        stacked = F.adaptive_avg_pool2d(stacked, size)
    return stacked[:, 0]


def render_batch(cfg: PretrainConfig, step: int, size: int) -> list:
    first = step * cfg.images_per_step
    return [render_shapes(cfg.shapes_seed, first + j, size) for j in range(cfg.images_per_step)]


def step_losses(sam: Sam, samples: list, cfg: PretrainConfig, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Forward all of SAM on a batch of shapes samples; the mean losses over all prompts."""
    device = sam.pixel_mean.device
    images = torch.as_tensor(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float().to(device)
    embeddings = sam.image_encoder(sam.preprocess(images))
    totals: dict[str, torch.Tensor] = {}
    for embedding, sample in zip(embeddings, samples):
        prompts = sample_prompts(sample.masks, cfg.prompts_per_image, rng, cfg.point_fraction,
                                 cfg.box_noise, cfg.box_noise_max)
        masks = target_masks(sample.masks, cfg.loss_size, device)
        for key, value in image_losses(sam, embedding, prompts, masks, cfg).items():
            totals[key] = totals.get(key, 0) + value
    count = totals.pop("count").clamp(min=1)
    out = {k: v / count for k, v in totals.items()}
    out["loss"] = out["seg"] + cfg.iou_weight * out["iou"]
    return out


def save_sam_weights(sam: Sam, path: str | Path, metadata: dict | None = None) -> Path:
    """SAM's state dict in the official key layout as safetensors, written atomically."""
    return save_sam_weights_state(sam.state_dict(), path, metadata)


def save_sam_weights_state(state: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path


def pretrain(cfg: PretrainConfig, out: str | Path, progress: bool = True) -> dict:
    """Train a SAM of cfg.sam_type from scratch; write OUT/sam.safetensors, log.jsonl, summary.json."""
    from tqdm import tqdm

    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = get_sam_config(cfg.sam_type).image_size
    sam = load_sam(cfg.sam_type, cfg.init_weights).requires_grad_(True) if cfg.init_weights else build_sam(cfg.sam_type)
    sam.train()
    groups = []
    for module, lr in ((sam.image_encoder, cfg.lr * cfg.encoder_lr_scale), (sam.prompt_encoder, cfg.lr), (sam.mask_decoder, cfg.lr)):
        named = list(module.named_parameters())
        decay = [p for n, p in named if p.ndim >= 2 and "pos" not in n]  # no decay on norms, biases, position tables
        rest = [p for n, p in named if not (p.ndim >= 2 and "pos" not in n)]
        groups += [{"params": decay, "lr": lr, "weight_decay": cfg.weight_decay}, {"params": rest, "lr": lr, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
    rng = np.random.default_rng([cfg.seed, 1])
    weights = out / "sam.safetensors"
    meta = {"sam_type": cfg.sam_type, "pretrain_config": json.dumps(cfg.to_dict())}
    started, cpu_started, window, history = time.perf_counter(), time.process_time(), [], []
    last = min(cfg.steps, cfg.stop_after) if cfg.stop_after > 0 else cfg.steps
    bar = tqdm(range(last), desc="pretrain", unit="step", disable=not progress)
    for step in bar:
        losses = step_losses(sam, render_batch(cfg, step, size), cfg, rng)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(sam.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        window.append({k: float(v.detach()) for k, v in losses.items()})
        if (step + 1) % cfg.log_every == 0 or step + 1 == last:
            row = {"step": step + 1, "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 1),
                   "cpu_seconds": round(time.process_time() - cpu_started, 1),
                   **{k: round(float(np.mean([w[k] for w in window])), 5) for k in window[0]}}
            history.append(row)
            window = []
            bar.set_postfix(loss=f"{row['loss']:.4f}", miou=f"{row['miou']:.3f}")
            atomic_write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        if (step + 1) % cfg.save_every == 0 or step + 1 == last:
            save_sam_weights(sam, weights, {**meta, "step": step + 1})
    summary = {"steps": last, "seconds": round(time.perf_counter() - started, 1),
               "cpu_seconds": round(time.process_time() - cpu_started, 1), "weights": str(weights),
               "final": history[-1] if history else {}, "config": cfg.to_dict()}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
