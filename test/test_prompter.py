"""Prompter shapes (tiny and reference configs) and gradient flow: prompter learns, SAM stays frozen."""
from __future__ import annotations

import pytest
import torch

from wps_sam_core.prompter import Prompter, PrompterConfig, neck_num_downsamples

from conftest import make_tiny_model


def test_reference_config_defaults_and_shapes():
    cfg = PrompterConfig()
    assert (cfg.enc_layers, cfg.dec_layers, cfg.hidden_dim, cfg.num_heads, cfg.num_queries, cfg.dim_feedforward) == (6, 6, 256, 8, 25, 1024)
    prompter = Prompter(cfg, embedding_size=64)
    assert neck_num_downsamples(64, cfg) == 2  # 64x64 -> 16x16
    assert prompter.neck(torch.zeros(1, 256, 64, 64)).shape == (1, 256, 16, 16)
    out = prompter(torch.randn(2, 256, 64, 64))
    assert out.logits.shape == (2, 25, 41)
    assert out.tokens.shape == (2, 25, 2, 256)


@pytest.mark.parametrize("embedding_size,expected_grid", [(16, 4), (8, 4), (4, 4), (64, 16)])
def test_neck_strides_derive_from_embedding_size(embedding_size, expected_grid):
    cfg = PrompterConfig(num_classes=2, hidden_dim=32, num_heads=2, enc_layers=1, dec_layers=1, dim_feedforward=32, prompt_dim=16)
    prompter = Prompter(cfg, embedding_size)
    assert prompter.neck(torch.zeros(1, 16, embedding_size, embedding_size)).shape[-1] == expected_grid


def test_gradient_reaches_prompter_and_nothing_in_sam():
    model = make_tiny_model(seed=1).train()
    assert not model.sam.training  # frozen SAM stays in eval mode
    images = torch.randn(2, 3, 256, 256)
    out = model(model.encode(images))
    teacher = model.teacher_box_tokens(torch.tensor([[10.0, 20, 100, 120]]))
    loss = (out.tokens[0, 0] - teacher[0]).pow(2).mean() + out.logits.logsumexp(-1).mean()
    loss.backward()
    no_grad = [n for n, p in model.prompter.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # DETR's first decoder self-attention acts on all-zero targets, so only its biases learn at step 0.
    assert all(n.startswith("transformer.decoder_layers.0.") for n in no_grad), no_grad
    assert model.prompter.class_head.weight.grad.abs().sum() > 0
    assert model.prompter.neck.layers[0].weight.grad.abs().sum() > 0
    assert model.prompter.query_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.sam.parameters())
