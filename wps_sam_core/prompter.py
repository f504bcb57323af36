"""The learned prompter: nn.Modules only (conv neck, DETR transformer, class and prompt heads)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

from torch import Tensor, nn

from .errors import WpsSamError
from .transformer import DetrTransformer, sine_position_embedding


@dataclass(frozen=True)
class PrompterConfig:
    """Hyper-parameters; defaults are the reference WPS-SAM prompter."""

    num_classes: int = 40
    num_queries: int = 25
    hidden_dim: int = 256
    num_heads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.1
    neck_stride: int = 4  # 64x64 SAM embedding -> 16x16 transformer grid
    min_grid: int = 4  # never downsample below this side (tiny SAMs have small embeddings)
    prompt_dim: int = 256  # SAM's prompt embedding width (set from the SAM config)
    num_prompt_tokens: int = 2  # the shape of a SAM box prompt

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PrompterConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WpsSamError(f"unknown prompter config keys: {unknown}")
        return cls(**data)


def neck_num_downsamples(embedding_size: int, cfg: PrompterConfig) -> int:
    """Number of stride-2 convolutions: log2(neck_stride), limited so the grid stays >= min_grid."""
    wanted = int(round(math.log2(cfg.neck_stride)))
    allowed = max(0, int(math.floor(math.log2(max(embedding_size, 1) / cfg.min_grid))))
    return min(wanted, allowed)


class ConvNeck(nn.Module):
    """1x1 projection to hidden_dim, then stride-2 3x3 convs (GroupNorm + GELU)."""

    def __init__(self, in_dim: int, hidden_dim: int, num_downsamples: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_dim, hidden_dim, 1), nn.GroupNorm(32 if hidden_dim % 32 == 0 else 1, hidden_dim)]
        for _ in range(num_downsamples):
            layers += [
                nn.Conv2d(hidden_dim, hidden_dim, 3, stride=2, padding=1),
                nn.GroupNorm(32 if hidden_dim % 32 == 0 else 1, hidden_dim),
                nn.GELU(),
            ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MLP(nn.Module):
    """Feed-forward head (ReLU between layers), as in DETR's box head."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else layer(x).relu()
        return x


class PrompterOutput(NamedTuple):
    logits: Tensor  # B x Q x (num_classes + 1); the last class is "no object"
    tokens: Tensor  # B x Q x num_prompt_tokens x prompt_dim


class Prompter(nn.Module):
    """SAM image embedding (B x prompt_dim x S x S) -> per query a class and 2 SAM prompt tokens."""

    def __init__(self, cfg: PrompterConfig, embedding_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding_size = embedding_size
        self.neck = ConvNeck(cfg.prompt_dim, cfg.hidden_dim, neck_num_downsamples(embedding_size, cfg))
        self.transformer = DetrTransformer(
            cfg.hidden_dim, cfg.num_heads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward, cfg.dropout
        )
        self.query_embed = nn.Embedding(cfg.num_queries, cfg.hidden_dim)
        self.class_head = nn.Linear(cfg.hidden_dim, cfg.num_classes + 1)
        self.prompt_head = MLP(cfg.hidden_dim, cfg.hidden_dim, cfg.num_prompt_tokens * cfg.prompt_dim, 3)

    @property
    def no_object_index(self) -> int:
        return self.cfg.num_classes

    def forward(self, image_embeddings: Tensor) -> PrompterOutput:
        if image_embeddings.shape[1] != self.cfg.prompt_dim:
            raise WpsSamError(
                f"image embedding has {image_embeddings.shape[1]} channels, prompter expects {self.cfg.prompt_dim}"
            )
        feats = self.neck(image_embeddings)
        b, _, h, w = feats.shape
        pos = sine_position_embedding(b, self.cfg.hidden_dim, h, w, feats.device, feats.dtype)
        hs = self.transformer(feats, pos, self.query_embed.weight)
        logits = self.class_head(hs)
        tokens = self.prompt_head(hs).view(b, self.cfg.num_queries, self.cfg.num_prompt_tokens, self.cfg.prompt_dim)
        return PrompterOutput(logits, tokens)
