"""Prompter shapes (tiny and reference configs) and gradient flow: prompter learns, SAM stays frozen."""
from __future__ import annotations

import pytest
import torch

from wps_sam_core.modeling.prompter import Prompter, PrompterConfig, neck_num_downsamples

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


@pytest.mark.parametrize("head", ["box", "point"])
def test_coordinate_heads_make_exactly_the_tokens_sam_makes_from_those_coordinates(head):
    """prompt_head box/point: the tokens are SAM's own prompt encoding of the predicted box/click."""
    from dataclasses import replace

    from conftest import tiny_prompter_config
    from wps_sam_core.modeling.wpssam import WPSSAM
    from wps_sam_core.modeling.sam import load_sam

    torch.manual_seed(3)
    model = WPSSAM.create(load_sam("tiny"), replace(tiny_prompter_config(), prompt_head=head)).train()
    out = model(torch.randn(2, model.sam.prompt_encoder.embed_dim, 16, 16))
    q = model.prompter.cfg.num_queries
    assert out.coords.shape == (2, q, 4 if head == "box" else 2)
    assert out.coords.min() >= 0 and out.coords.max() <= 1
    pixels = out.coords.detach().reshape(2 * q, -1) * 256
    if head == "box":
        assert (pixels[:, 2] >= pixels[:, 0]).all() and (pixels[:, 3] >= pixels[:, 1]).all()
        teacher = model.teacher_box_tokens(pixels)
    else:
        teacher = model.teacher_point_tokens(pixels)
    assert out.tokens.shape == (2, q, 2, model.sam.prompt_encoder.embed_dim)
    torch.testing.assert_close(out.tokens.detach().reshape(2 * q, 2, -1), teacher, atol=1e-5, rtol=1e-5)
    out.tokens.sum().backward()  # the tokens are differentiable in the coordinates, SAM stays frozen
    assert model.prompter.prompt_head.layers[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.sam.parameters())


def test_unknown_prompt_head_is_named():
    from wps_sam_core.errors import WpsSamError

    with pytest.raises(WpsSamError, match="prompt_head 'boxes'"):
        PrompterConfig(prompt_head="boxes")


@pytest.mark.parametrize("embedding_size,neck_stride,grid", [(16, 2, 8), (64, 4, 16)])
def test_grid_queries_start_at_their_cells(embedding_size, neck_stride, grid):
    """queries: grid -> one query per transformer-grid cell; a zero offset puts box/point on the cell centre."""
    for head in ("box", "point"):
        cfg = PrompterConfig(num_classes=3, hidden_dim=32, num_heads=2, enc_layers=1, dec_layers=1, dim_feedforward=32,
                             prompt_dim=16, neck_stride=neck_stride, queries="grid", prompt_head=head)
        prompter = Prompter(cfg, embedding_size)
        assert prompter.query_embed is None and prompter.num_queries == grid * grid
        with torch.no_grad():
            prompter.prompt_head.layers[-1].weight.zero_()
            prompter.prompt_head.layers[-1].bias.zero_()
        out = prompter(torch.randn(2, 16, embedding_size, embedding_size))
        assert out.logits.shape == (2, grid * grid, 4)
        centres = (out.coords[..., :2] + out.coords[..., 2:]) / 2 if head == "box" else out.coords
        cell = 1.0 / grid
        # row-major like the flattened features: query i * grid + j sits at column j, row i
        assert torch.allclose(centres[0, 0], torch.tensor([cell / 2, cell / 2]), atol=1e-6)
        assert torch.allclose(centres[1, grid + 2], torch.tensor([2.5 * cell, 1.5 * cell]), atol=1e-6)
        if head == "box":
            assert torch.allclose(out.coords[..., 2:] - out.coords[..., :2], torch.full((2, grid * grid, 2), 0.5))


def test_all_layers_gives_one_output_per_decoder_layer_and_the_last_is_the_prediction():
    """DETR's auxiliary losses supervise every decoder layer; inference uses the last one only."""
    cfg = PrompterConfig(num_classes=3, hidden_dim=32, num_heads=2, enc_layers=1, dec_layers=3, dim_feedforward=32,
                         prompt_dim=16, queries="grid", prompt_head="box", dropout=0.0)
    prompter = Prompter(cfg, 16).eval()
    x = torch.randn(2, 16, 16, 16)
    layers = prompter(x, all_layers=True)
    assert len(layers) == 3
    final = prompter(x)
    torch.testing.assert_close(layers[-1].logits, final.logits)
    torch.testing.assert_close(layers[-1].coords, final.coords)
    assert not torch.allclose(layers[0].coords, final.coords)
