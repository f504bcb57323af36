"""Hungarian matching of prompter queries to teacher prompts (DETR's matcher, token cost in place of boxes)."""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import generalized_box_iou  # pairwise GIoU of xyxy boxes, DETR's definition


class HungarianMatcher:
    """cost = cost_class * (-p(target class)) + cost_token * ||student tokens - teacher tokens||_2
    (+ cost_coord * L1 of normalised coordinates - cost_giou * GIoU, for prompters with a box/point head).

    Reference weights: cost_class 10, cost_token 1.
    """

    def __init__(self, cost_class: float = 10.0, cost_token: float = 1.0, cost_coord: float = 0.0,
                 cost_giou: float = 0.0) -> None:
        if cost_class == 0 and cost_token == 0 and cost_coord == 0 and cost_giou == 0:
            raise ValueError("matcher costs can't all be 0")
        self.cost_class = cost_class
        self.cost_token = cost_token
        self.cost_coord = cost_coord
        self.cost_giou = cost_giou

    @torch.no_grad()
    def cost_matrices(self, logits: Tensor, tokens: Tensor, targets: list[dict[str, Tensor]],
                      coords: Tensor | None = None) -> list[np.ndarray]:
        """Per image a Q x N_i cost matrix. targets[i]: {"labels": N_i, "tokens": N_i x T x C[, "coords": N_i x K]}."""
        probs = logits.float().softmax(-1)
        out = []
        for b, target in enumerate(targets):
            labels, teacher = target["labels"], target["tokens"]
            if len(labels) == 0:
                out.append(np.zeros((logits.shape[1], 0), dtype=np.float64))
                continue
            cost_class = -probs[b][:, labels]
            cost_token = torch.cdist(tokens[b].flatten(1).float(), teacher.flatten(1).float(), p=2)
            cost = self.cost_class * cost_class + self.cost_token * cost_token
            if coords is not None and target.get("coords") is not None:
                student, teacher_xy = coords[b].float(), target["coords"].float()
                cost = cost + self.cost_coord * torch.cdist(student, teacher_xy, p=1)
                if coords.shape[-1] == 4:  # boxes (x1, y1, x2, y2); points have no IoU
                    cost = cost - self.cost_giou * generalized_box_iou(student, teacher_xy)
            out.append(cost.cpu().double().numpy())
        return out

    def __call__(self, logits: Tensor, tokens: Tensor, targets: list[dict[str, Tensor]],
                 coords: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Returns per image (query indices, target indices), each of length min(Q, N_i)."""
        matches = []
        for cost in self.cost_matrices(logits, tokens, targets, coords):
            rows, cols = linear_sum_assignment(cost)
            matches.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return matches
