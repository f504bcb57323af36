"""Class-aware duplicate suppression of part instances, on the decoder's low-resolution masks.

The prompter can emit several queries for one part (four `hammer_head` instances on one hammer
head). A robot wants one instance per part, so before the masks are upscaled and painted, masks
of the same class that overlap too much are reduced to the best-scored one. Parts of different
classes never suppress each other (a handle may overlap its mug body).

Inputs: `masks` N x h x w (bool, or float logits binarised at `mask_threshold`), `classes` (N)
and `scores` (N), on any device. Work is done on the masks' device with one batched op: the N x N
IoU matrix from one float64 matmul of the flattened masks (float64: exact pixel counts whatever
the TF32 / autocast settings). Ranking is by descending score, ties by lower index, so results
are deterministic. `deduplicate` and `mask_nms` return the kept indices in ascending index order
(so `x[keep]` keeps the input's order) as a LongTensor on the masks' device.

- `mask_nms` (greedy): walk the ranking; drop an instance whose IoU with an already kept
  instance of its class is > iou_threshold. The N x N test is batched; only the O(N) walk over
  the (small) boolean matrix runs on the CPU.
- `matrix_nms` (SOLOv2, Wang et al. 2020): no walk at all; every instance's score decays by
  its overlaps with higher-ranked same-class instances, compensated by how much those were
  themselves suppressed: decay_j = min_i f(IoU_ij) / f(max_k IoU_ki) over higher-ranked i of
  j's class (k higher-ranked than i, same class), f(x) = exp(-sigma x^2) ("gaussian") or
  1 - x ("linear"). `deduplicate(..., method="matrix")` keeps an instance when decay_j >=
  f(dedup_iou): without compensation this is exactly "no higher-ranked same-class instance
  with IoU > dedup_iou" (Fast NMS); compensation keeps instances whose suppressor was itself
  a duplicate.
- `merge` (mask merging): a dropped mask is not lost but joins the instance that stands for its
  group. Groups are the connected components of the graph "same class and IoU > dedup_iou"
  (single linkage, so a whole part and its two halves are one group even when the halves barely
  overlap each other), found by `duplicate_groups` from the same IoU matrix with a transitive
  closure by repeated boolean squaring (ceil(log2 N) small matmuls, no walk). Each group is
  represented by its best-ranked member, whose mask becomes the union of the group's masks
  (`merge_into_owners`: the elementwise max of the logits, which is the union at every mask
  threshold); class, score and IoU prediction stay the representative's. The prompter's
  duplicates are often partial (one query per half of a part, plus one for the whole), so the
  union keeps pixels that dropping the others would lose.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import WpsSamError

DEDUP_METHODS = ("greedy", "matrix", "merge")
MATRIX_KERNELS = ("gaussian", "linear")
DEFAULT_SIGMA = 2.0  # SOLOv2's default for the gaussian kernel


def binarize(masks: torch.Tensor, mask_threshold: float = 0.0) -> torch.Tensor:
    """Bool masks as they are; logits (any float dtype) -> logits > mask_threshold."""
    return masks if masks.dtype == torch.bool else masks > mask_threshold


def mask_iou_matrix(masks: torch.Tensor, mask_threshold: float = 0.0) -> torch.Tensor:
    """N x h x w masks -> N x N float64 IoU (0 for a pair of empty masks), one matmul."""
    flat = binarize(masks, mask_threshold).flatten(1).to(torch.float64)
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def score_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices by descending score; equal scores keep the lower index first (stable sort)."""
    return torch.sort(scores, descending=True, stable=True).indices


def ranked_same_class_iou(masks: torch.Tensor, classes: torch.Tensor, order: torch.Tensor,
                          mask_threshold: float) -> torch.Tensor:
    """N x N matrix in ranking order: [a, b] = IoU when a ranks above b and both share a class, else 0."""
    iou = mask_iou_matrix(masks[order], mask_threshold)
    ranked_classes = classes.to(iou.device)[order]
    same = ranked_classes[:, None] == ranked_classes[None, :]
    return torch.triu(iou * same, diagonal=1)


def _check(masks: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor) -> None:
    if masks.dim() != 3:
        raise WpsSamError(f"masks must be N x h x w, got shape {tuple(masks.shape)}")
    if classes.shape != (len(masks),) or scores.shape != (len(masks),):
        raise WpsSamError(f"{len(masks)} masks need {len(masks)} classes and scores, got shapes "
                          f"{tuple(classes.shape)} and {tuple(scores.shape)}")


def _keep_to_indices(keep_ranked: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """A keep flag per ranked position -> kept original indices, ascending."""
    return torch.sort(order[keep_ranked.to(order.device)]).values


def mask_nms(masks: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
             mask_threshold: float = 0.0) -> torch.Tensor:
    """Greedy class-aware mask NMS: indices kept (ascending), see the module docstring."""
    _check(masks, classes, scores)
    order = score_order(scores).to(masks.device)
    suppresses = (ranked_same_class_iou(masks, classes, order, mask_threshold) > iou_threshold).cpu().numpy()
    keep = np.ones(len(order), dtype=bool)
    for rank in range(len(order)):
        if keep[rank]:
            keep[rank + 1:] &= ~suppresses[rank, rank + 1:]
    return _keep_to_indices(torch.from_numpy(keep), order)


def duplicate_groups(masks: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                     mask_threshold: float = 0.0) -> torch.Tensor:
    """Per instance (input order) the index of its group's representative (itself when it represents
    one): groups = connected components of "same class and IoU > iou_threshold", represented by the
    best-ranked member (module docstring). A LongTensor on the masks' device."""
    _check(masks, classes, scores)
    n = len(masks)
    order = score_order(scores).to(masks.device)
    if n == 0:
        return order
    above = ranked_same_class_iou(masks, classes, order, mask_threshold) > iou_threshold  # upper triangle
    reach = above | above.T | torch.eye(n, dtype=torch.bool, device=above.device)
    for _ in range(max(1, math.ceil(math.log2(n)))):  # paths of length 2, 4, 8, ... >= n - 1
        reach = (reach.to(torch.float64) @ reach.to(torch.float64)) > 0
    ranks = torch.arange(n, device=reach.device)
    first_rank = torch.where(reach, ranks[None, :], torch.full_like(reach, n, dtype=torch.long)).min(1).values
    owner = torch.empty_like(order)
    owner[order] = order[first_rank.to(order.device)]
    return owner


def merge_into_owners(logits: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """N x ... masks (logits or bool) -> N x ...: row k = the elementwise max over the rows j with
    owner[j] == k (k itself included), the union of k's group at any mask threshold; other rows as they were."""
    if logits.dtype == torch.bool:
        return merge_into_owners(logits.to(torch.uint8), owner).bool()
    index = owner.to(logits.device).view(-1, *([1] * (logits.dim() - 1))).expand_as(logits)
    return logits.clone().scatter_reduce_(0, index, logits, "amax", include_self=True)


def merge_duplicates(logits: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, dedup_iou: float,
                     mask_threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Method "merge" in one call: N x [1 x] h x w mask logits -> (kept indices ascending, their K x [1 x] h x w
    logits, each the union of its group); the segmenter's step and the ONNX host code's."""
    owner = duplicate_groups(logits.reshape(len(logits), *logits.shape[-2:]), classes, scores, dedup_iou,
                             mask_threshold)
    keep = torch.unique(owner)  # sorted: the input order, like deduplicate's
    return keep, merge_into_owners(logits, owner)[keep]


def kernel_fn(kernel: str, sigma: float = DEFAULT_SIGMA):
    """Matrix-NMS decay kernel f(IoU): 1 at IoU 0, decreasing."""
    if kernel == "gaussian":
        return lambda x: torch.exp(-sigma * x ** 2)
    if kernel == "linear":
        return lambda x: 1.0 - x
    raise WpsSamError(f"unknown matrix-NMS kernel {kernel!r}; use one of {', '.join(MATRIX_KERNELS)}")


def matrix_decay(masks: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, kernel: str = "gaussian",
                 sigma: float = DEFAULT_SIGMA, mask_threshold: float = 0.0) -> torch.Tensor:
    """SOLOv2 Matrix-NMS decay factor per instance (input order, float64 in (0, 1])."""
    _check(masks, classes, scores)
    if len(masks) == 0:
        return torch.zeros(0, dtype=torch.float64, device=masks.device)
    f = kernel_fn(kernel, sigma)
    order = score_order(scores).to(masks.device)
    iou = ranked_same_class_iou(masks, classes, order, mask_threshold)   # [i, j]: i ranks above j
    compensate = iou.max(dim=0).values                                    # per i: its own worst overlap above
    ratio = f(iou) / f(compensate)[:, None].clamp(min=1e-12)
    decay_ranked = ratio.min(dim=0).values.clamp(max=1.0)
    decay = torch.empty_like(decay_ranked)
    decay[order] = decay_ranked
    return decay


def matrix_nms(masks: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, kernel: str = "gaussian",
               sigma: float = DEFAULT_SIGMA, mask_threshold: float = 0.0) -> torch.Tensor:
    """SOLOv2 Matrix-NMS: the decayed scores (input order, scores' dtype); threshold them to keep."""
    decay = matrix_decay(masks, classes, scores, kernel, sigma, mask_threshold)
    return (scores.to(decay.device, torch.float64) * decay).to(scores.dtype)


def deduplicate(masks: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, dedup_iou: float,
                method: str = "greedy", kernel: str = "gaussian", sigma: float = DEFAULT_SIGMA,
                mask_threshold: float = 0.0) -> torch.Tensor:
    """Indices of the instances to keep (ascending); dedup_iou 0 turns suppression off (all kept).

    "greedy": mask_nms at IoU > dedup_iou. "matrix": keep where the Matrix-NMS decay is at least
    f(dedup_iou), the decay one same-class overlap at IoU = dedup_iou would cause. "merge": the
    representatives of duplicate_groups; to unite each group's masks use duplicate_groups and
    merge_into_owners directly.
    """
    if not (isinstance(dedup_iou, (int, float)) and 0.0 <= dedup_iou <= 1.0) or math.isnan(dedup_iou):
        raise WpsSamError(f"dedup_iou must be in [0, 1] (0 = off), got {dedup_iou!r}")
    if method not in DEDUP_METHODS:
        raise WpsSamError(f"unknown dedup method {method!r}; use one of {', '.join(DEDUP_METHODS)}")
    _check(masks, classes, scores)
    if dedup_iou == 0 or len(masks) == 0:
        return torch.arange(len(masks), device=masks.device)
    if method == "greedy":
        return mask_nms(masks, classes, scores, dedup_iou, mask_threshold)
    if method == "merge":
        return torch.unique(duplicate_groups(masks, classes, scores, dedup_iou, mask_threshold))
    decay = matrix_decay(masks, classes, scores, kernel, sigma, mask_threshold)
    floor = kernel_fn(kernel, sigma)(torch.tensor(float(dedup_iou), dtype=torch.float64))
    return torch.nonzero(decay >= floor.to(decay.device)).flatten()
