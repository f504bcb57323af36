"""Tiny SAM pre-training: prompt sampling, losses, a few real steps, strict reload of the saved weights."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from wps_sam_core.data.shapes_world import render_shapes
from wps_sam_core.modeling.sam import build_sam, load_sam
from wps_sam_core.distill.sam_pretrain import (
    BOX, POINT, PretrainConfig, dice_loss, focal_loss, render_batch, sample_prompts, step_losses, tight_box,
)

REPO = Path(__file__).resolve().parents[1]
MICRO = PretrainConfig(steps=2, images_per_step=1, prompts_per_image=4, warmup_steps=1, loss_size=32, log_every=1,
                       point_fraction=0.5, num_threads=2,
                       save_every=1, lr=1e-3)


def test_prompts_sit_on_their_targets():
    sample = render_shapes(seed=3, index=0, size=128)
    rng = np.random.default_rng(0)
    prompts = sample_prompts(sample.masks, 40, rng, point_fraction=0.5, box_noise=0.1, box_noise_max=5.0)
    assert set(prompts.kinds) == {BOX, POINT}
    assert set(prompts.targets[: len(sample.masks)]) == set(range(len(sample.masks)))  # every mask before repeats
    for kind, target, box, point in zip(*prompts):
        mask = sample.masks[target]
        if kind == POINT:
            x, y = point
            assert mask[int(y), int(x)]  # a click on the target itself
        else:
            tight = tight_box(mask)
            assert np.all(np.abs(box - tight) <= 5.0 + 1e-4)  # SAM-style noise, capped
            assert 0 <= box[0] <= box[2] <= 128 and 0 <= box[1] <= box[3] <= 128


def test_prompt_sampling_is_seeded():
    masks = render_shapes(seed=1, index=2, size=128).masks
    a = sample_prompts(masks, 8, np.random.default_rng(5))
    b = sample_prompts(masks, 8, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_losses_reward_the_right_mask():
    target = torch.zeros(1, 16, 16)
    target[0, 4:12, 4:12] = 1
    good, bad = (target * 20 - 10), (10 - target * 20)
    assert focal_loss(good, target) < focal_loss(bad, target)
    assert dice_loss(good, target) < 0.05 < 0.95 < dice_loss(bad, target)


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    sam = build_sam("tiny").train()
    samples = render_batch(MICRO, 0, 256)
    optimizer = torch.optim.AdamW(sam.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):  # the same batch and prompts each step: the loss must fall
        loss = step_losses(sam, samples, MICRO, np.random.default_rng(0))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_script_writes_weights_that_load_strictly(tmp_path):
    overrides = [f"--set={k}={v}" for k, v in MICRO.to_dict().items() if v != getattr(PretrainConfig(), k)]
    proc = subprocess.run([sys.executable, str(REPO / "training" / "pretrain_tiny_sam.py"), "--out", str(tmp_path),
                           "--no-progress", *overrides], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    weights = tmp_path / "sam.safetensors"
    sam = load_sam("tiny", weights)  # strict: every official key, nothing else
    assert not any(p.requires_grad for p in sam.parameters())
    assert not torch.equal(sam.mask_decoder.iou_token.weight, build_sam_seeded().mask_decoder.iou_token.weight)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2] and all(np.isfinite(row["loss"]) for row in log)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def build_sam_seeded():
    torch.manual_seed(0)
    return build_sam("tiny")


def test_bad_override_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "training" / "pretrain_tiny_sam.py"), "--out", str(tmp_path),
                           "--set", "nonsense=1"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "nonsense" in proc.stderr and "Traceback" not in proc.stderr
