"""DETR-style encoder-decoder transformer (post-norm; positions added to queries and keys).

Plain PyTorch after facebookresearch/detr `models/transformer.py`: the encoder refines the
flattened image features, the decoder turns learned queries into one embedding per query.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, dim_feedforward), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim_feedforward, d_model)
        )
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        q = k = src + pos
        src = self.norm1(src + self.drop1(self.self_attn(q, k, src, need_weights=False)[0]))
        return self.norm2(src + self.drop2(self.ffn(src)))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, dim_feedforward), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim_feedforward, d_model)
        )
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.drop1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attn = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.drop2(attn))
        return self.norm3(tgt + self.drop3(self.ffn(tgt)))


class DetrTransformer(nn.Module):
    def __init__(
        self, d_model: int, nhead: int, num_encoder_layers: int, num_decoder_layers: int,
        dim_feedforward: int, dropout: float,
    ) -> None:
        super().__init__()
        self.encoder_layers = _clones(EncoderLayer(d_model, nhead, dim_feedforward, dropout), num_encoder_layers)
        self.decoder_layers = _clones(DecoderLayer(d_model, nhead, dim_feedforward, dropout), num_decoder_layers)
        self.decoder_norm = nn.LayerNorm(d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, pos: Tensor, query_embed: Tensor | None, all_layers: bool = False) -> Tensor:
        """src, pos: B x C x H x W; query_embed: Q x C learned queries, or None for one query per grid
        cell (content = the cell's encoder output, position = its sine embedding). Returns B x Q x C,
        or L x B x Q x C with `all_layers` (every decoder layer's output, for DETR's auxiliary losses)."""
        memory = src.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        for layer in self.encoder_layers:
            memory = layer(memory, pos)
        if query_embed is None:
            query_pos, tgt = pos, memory
        else:
            query_pos = query_embed.unsqueeze(0).expand(src.shape[0], -1, -1)
            tgt = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.decoder_layers:
            tgt = layer(tgt, memory, pos, query_pos)
            if all_layers:
                outputs.append(self.decoder_norm(tgt))
        return torch.stack(outputs) if all_layers else self.decoder_norm(tgt)


def sine_position_embedding(batch: int, d_model: int, h: int, w: int, device, dtype) -> Tensor:
    """DETR's normalised 2-D sine embedding, B x d_model x H x W."""
    num_pos_feats, temperature, scale, eps = d_model // 2, 10000, 2 * math.pi, 1e-6
    y = torch.arange(1, h + 1, device=device, dtype=torch.float32)[:, None].expand(h, w)
    x = torch.arange(1, w + 1, device=device, dtype=torch.float32)[None, :].expand(h, w)
    y, x = y / (h + eps) * scale, x / (w + eps) * scale
    dim_t = torch.arange(num_pos_feats, device=device, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=3).flatten(2)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=3).flatten(2)
    pos = torch.cat((py, px), dim=2).permute(2, 0, 1)
    return pos.unsqueeze(0).expand(batch, -1, -1, -1).to(dtype)
