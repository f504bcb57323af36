"""Hungarian matcher against brute force; the criterion pulls matched student tokens to the teacher."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from wps_sam_core.distill.losses import LossConfig, WPSCriterion
from wps_sam_core.distill.matcher import HungarianMatcher

from conftest import make_tiny_model


def brute_force_cost(cost: np.ndarray) -> float:
    q, n = cost.shape
    return min(sum(cost[r, c] for r, c in zip(rows, range(n))) for rows in itertools.permutations(range(q), n))


@pytest.mark.parametrize("seed", range(6))
def test_assignment_equals_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    q, n, c = 5, 3, 4
    logits = torch.randn(1, q, c + 1, generator=gen)
    tokens = torch.randn(1, q, 2, 6, generator=gen)
    target = {"labels": torch.randint(0, c, (n,), generator=gen), "tokens": torch.randn(n, 2, 6, generator=gen)}
    matcher = HungarianMatcher(cost_class=10, cost_token=1)
    cost = matcher.cost_matrices(logits, tokens, [target])[0]
    rows, cols = matcher(logits, tokens, [target])[0]
    assert len(set(rows.tolist())) == n and sorted(cols.tolist()) == list(range(n))
    assert cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(brute_force_cost(cost))


def test_hand_made_cost_case():
    # Query 1 is the best for target 0 by token distance; query 0 matches target 1; query 2 unused.
    tokens = torch.tensor([[[[0.0, 0.0]], [[5.0, 5.0]], [[9.0, -9.0]]]])
    logits = torch.zeros(1, 3, 3)
    target = {"labels": torch.tensor([0, 1]), "tokens": torch.tensor([[[5.0, 5.1]], [[0.1, 0.0]]])}
    rows, cols = HungarianMatcher(cost_class=1, cost_token=1)(logits, tokens, [target])[0]
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 1, 1: 0}


def test_image_without_targets_is_all_no_object():
    criterion = WPSCriterion(num_classes=3)
    logits = torch.zeros(1, 4, 4, requires_grad=True)
    tokens = torch.zeros(1, 4, 2, 8, requires_grad=True)
    out = criterion(logits, tokens, [{"labels": torch.zeros(0, dtype=torch.long), "tokens": torch.zeros(0, 2, 8)}])
    out["loss"].backward()
    assert out["loss_token"] == 0 and out["loss_ce"] > 0
    assert logits.grad[0, :, -1].lt(0).all()  # pushes every query towards no-object


def test_loss_decreases_and_matched_tokens_approach_teacher():
    torch.manual_seed(0)
    model = make_tiny_model(seed=2, force_parts=False).train()
    images = torch.randn(2, 3, 256, 256)
    embeddings = model.encode(images)
    boxes = [torch.tensor([[10.0, 20, 120, 140], [100, 90, 250, 200]]), torch.tensor([[30.0, 30, 90, 220]])]
    targets = [{"labels": torch.tensor([0, 2]), "tokens": model.teacher_box_tokens(boxes[0])},
               {"labels": torch.tensor([1]), "tokens": model.teacher_point_tokens(torch.tensor([[60.0, 100]]))}]
    criterion = WPSCriterion(num_classes=3, cfg=LossConfig())
    optimizer = torch.optim.AdamW(model.prompter.parameters(), lr=1e-3)

    def matched_distance() -> float:
        with torch.no_grad():
            out = model(embeddings)
            matches = criterion.matcher(out.logits, out.tokens, targets)
            return float(sum((out.tokens[b, q] - t["tokens"][j]).norm(dim=-1).mean() for b, ((q, j), t) in enumerate(zip(matches, targets))))

    start_distance = matched_distance()
    losses = []
    for _ in range(30):
        out = model(embeddings)
        loss = criterion(out.logits, out.tokens, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert matched_distance() < 0.7 * start_distance


def test_box_head_loss_pulls_predicted_boxes_to_the_weak_labels():
    """prompt_head box: the coordinate L1 + token loss move matched boxes onto the ground-truth boxes."""
    from dataclasses import replace

    from conftest import tiny_prompter_config
    from wps_sam_core.modeling.wpssam import WPSSAM
    from wps_sam_core.modeling.sam import load_sam

    torch.manual_seed(0)
    model = WPSSAM.create(load_sam("tiny"), replace(tiny_prompter_config(), prompt_head="box")).train()
    embeddings = model.encode(torch.randn(2, 3, 256, 256))
    boxes = [torch.tensor([[10.0, 20, 120, 140], [100, 90, 250, 200]]), torch.tensor([[30.0, 30, 90, 220]])]
    targets = [{"labels": torch.tensor([0, 2]), "tokens": model.teacher_box_tokens(boxes[0]), "coords": boxes[0] / 256},
               {"labels": torch.tensor([1]), "tokens": model.teacher_box_tokens(boxes[1]), "coords": boxes[1] / 256}]
    criterion = WPSCriterion(num_classes=3, cfg=LossConfig())
    optimizer = torch.optim.AdamW(model.prompter.parameters(), lr=1e-3)

    def matched_box_error() -> float:
        with torch.no_grad():
            out = model(embeddings)
            matches = criterion.matcher(out.logits, out.tokens, targets, out.coords)
            return float(sum((out.coords[b, q] - t["coords"][j]).abs().mean() for b, ((q, j), t) in enumerate(zip(matches, targets))))

    start = matched_box_error()
    for _ in range(40):
        out = model(embeddings)
        losses = criterion(out.logits, out.tokens, targets, coords=out.coords)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    assert "loss_coord" in losses and losses["loss_giou"] >= 0
    assert matched_box_error() < 0.3 * start


def test_giou_cost_counts_without_an_l1_cost():
    """cost_giou alone must still steer the assignment (it is not nested under cost_coord)."""
    logits = torch.zeros(1, 2, 3)
    tokens = torch.zeros(1, 2, 2, 4)
    coords = torch.tensor([[[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]]])
    target = {"labels": torch.tensor([0]), "tokens": torch.zeros(1, 2, 4), "coords": torch.tensor([[0.5, 0.5, 0.9, 0.9]])}
    cost, = HungarianMatcher(cost_class=1.0, cost_token=1.0, cost_coord=0.0, cost_giou=2.0).cost_matrices(
        logits, tokens, [target], coords)
    giou_far = 0.0 - (0.81 - 0.20) / 0.81  # no overlap; enclosing box 0.81, union 0.04 + 0.16
    assert cost[0, 0] - cost[1, 0] == pytest.approx(2.0 * (1.0 - giou_far), abs=1e-5)
    (rows, cols), = HungarianMatcher(1.0, 1.0, 0.0, 2.0)(logits, tokens, [target], coords)
    assert rows.tolist() == [1] and cols.tolist() == [0]
