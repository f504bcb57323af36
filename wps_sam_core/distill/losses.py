"""The WPS-SAM criterion: SmoothL1 on matched prompt tokens + cross-entropy with a no-object class."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou

from .matcher import HungarianMatcher


@dataclass(frozen=True)
class LossConfig:
    """Reference defaults: loss weights 5 (CE) / 20 (tokens), matcher costs 10 (class) / 1 (tokens)."""

    ce_weight: float = 5.0
    token_weight: float = 20.0
    no_object_weight: float = 0.1  # DETR's eos_coef: most queries are no-object, so down-weight them
    cost_class: float = 10.0
    cost_token: float = 1.0
    # Prompters with a box/point head only (PrompterConfig.prompt_head): L1 on the coordinates,
    # normalised to [0, 1] of SAM's input frame, next to the token loss (DETR's box weights).
    coord_weight: float = 5.0
    cost_coord: float = 5.0
    giou_weight: float = 2.0  # box heads: generalised IoU, scale-free where L1 favours large parts (DETR: 2 / 2)
    cost_giou: float = 2.0
    aux_loss: bool = True  # DETR's auxiliary losses: every decoder layer is matched and supervised


class WPSCriterion(nn.Module):
    def __init__(self, num_classes: int, cfg: LossConfig = LossConfig()) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cfg = cfg
        self.matcher = HungarianMatcher(cfg.cost_class, cfg.cost_token, cfg.cost_coord, cfg.cost_giou)
        weight = torch.ones(num_classes + 1)
        weight[-1] = cfg.no_object_weight
        self.register_buffer("class_weight", weight)

    def forward(self, logits: Tensor, tokens: Tensor, targets: list[dict[str, Tensor]],
                num_targets: float | None = None, coords: Tensor | None = None) -> dict[str, Tensor]:
        """logits B x Q x (C+1), tokens B x Q x T x D; targets[i] = {"labels": N_i, "tokens": N_i x T x D}
        (+ "coords": N_i x K normalised teacher coordinates, used with `coords` B x Q x K of a box/point head).

        `num_targets` normalises the token loss (pass the all-reduced count under DDP so every
        process weighs instances the same); defaults to this batch's count.
        """
        use_coords = coords is not None and all(t.get("coords") is not None for t in targets if len(t["labels"]))
        matches = self.matcher(logits, tokens, targets, coords if use_coords else None)
        batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)]).to(logits.device)
        query_idx = torch.cat([q for q, _ in matches]).to(logits.device)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.long, device=logits.device)
        if len(query_idx):
            target_classes[batch_idx, query_idx] = torch.cat(
                [t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, matches)]).to(logits.device)
        loss_ce = F.cross_entropy(logits.float().transpose(1, 2), target_classes, self.class_weight)

        n = max(float(num_targets if num_targets is not None else sum(len(t["labels"]) for t in targets)), 1.0)
        if len(query_idx):
            student = tokens[batch_idx, query_idx].float()
            teacher = torch.cat([t["tokens"][j.to(t["tokens"].device)] for t, (_, j) in zip(targets, matches)]).float()
            loss_token = F.smooth_l1_loss(student, teacher, reduction="none").mean(dim=(1, 2)).sum() / n
        else:
            loss_token = tokens.sum() * 0.0  # keeps the graph (and DDP's gradient sync) intact
        total = self.cfg.ce_weight * loss_ce + self.cfg.token_weight * loss_token
        out = {"loss_ce": loss_ce.detach(), "loss_token": loss_token.detach()}
        if use_coords:
            if len(query_idx):
                teacher_xy = torch.cat([t["coords"][j.to(t["coords"].device)] for t, (_, j) in zip(targets, matches)
                                        if len(j)]).float()
                student_xy = coords[batch_idx, query_idx].float()
                loss_coord = F.l1_loss(student_xy, teacher_xy, reduction="none").sum() / n
                loss_giou = ((1 - generalized_box_iou(student_xy, teacher_xy).diagonal()).sum() / n
                             if coords.shape[-1] == 4 else coords.sum() * 0.0)
            else:
                loss_coord = loss_giou = coords.sum() * 0.0
            total = total + self.cfg.coord_weight * loss_coord + self.cfg.giou_weight * loss_giou
            out["loss_coord"] = loss_coord.detach()
            out["loss_giou"] = loss_giou.detach()
        return {"loss": total, **out}
