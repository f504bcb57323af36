"""The WPS-SAM criterion: SmoothL1 on matched prompt tokens + cross-entropy with a no-object class."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .matcher import HungarianMatcher


@dataclass(frozen=True)
class LossConfig:
    """Reference defaults: loss weights 5 (CE) / 20 (tokens), matcher costs 10 (class) / 1 (tokens)."""

    ce_weight: float = 5.0
    token_weight: float = 20.0
    no_object_weight: float = 0.1  # DETR's eos_coef: most queries are no-object, so down-weight them
    cost_class: float = 10.0
    cost_token: float = 1.0


class WPSCriterion(nn.Module):
    def __init__(self, num_classes: int, cfg: LossConfig = LossConfig()) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cfg = cfg
        self.matcher = HungarianMatcher(cfg.cost_class, cfg.cost_token)
        weight = torch.ones(num_classes + 1)
        weight[-1] = cfg.no_object_weight
        self.register_buffer("class_weight", weight)

    def forward(self, logits: Tensor, tokens: Tensor, targets: list[dict[str, Tensor]],
                num_targets: float | None = None) -> dict[str, Tensor]:
        """logits B x Q x (C+1), tokens B x Q x T x D; targets[i] = {"labels": N_i, "tokens": N_i x T x D}.

        `num_targets` normalises the token loss (pass the all-reduced count under DDP so every
        process weighs instances the same); defaults to this batch's count.
        """
        matches = self.matcher(logits, tokens, targets)
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
        return {"loss": total, "loss_ce": loss_ce.detach(), "loss_token": loss_token.detach()}
