"""The learned prompter: nn.Modules only (conv neck, DETR transformer, class and prompt heads)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import WpsSamError
from .transformer import DetrTransformer, sine_position_embedding


# prompt_head -> numbers the head regresses per query
PROMPT_HEADS = {"tokens": 0, "box": 4, "point": 2}
QUERY_SOURCES = ("learned", "grid")


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
    # "tokens": an MLP regresses the 2 prompt tokens directly (the paper). "box" / "point": an MLP
    # regresses a box (cx, cy, w, h) / a click (x, y) in [0, 1] of SAM's input frame, and SAM's own
    # frozen prompt encoder turns it into the 2 tokens (WPSSAM.forward), so every output is a token
    # pair SAM has seen. The tokens are random Fourier features with a kernel ~1/12 of the image
    # wide: a token loss alone has no gradient toward a corner farther away than that, which a small
    # model on a CPU budget does not overcome (it settles on the mean token); coordinates do.
    prompt_head: str = "tokens"
    # "learned": num_queries learned query embeddings (DETR, the paper). "grid": one query per cell of
    # the transformer grid, started from that cell's encoder feature and position, with box/point
    # heads predicting relative to the cell centre (the two-stage / anchor-point idea of Deformable
    # DETR and DeFCN): every query has a place to start from, which is what lets a small prompter
    # converge in minutes on a CPU instead of DETR's hundreds of epochs. num_queries is then unused.
    queries: str = "learned"

    def __post_init__(self) -> None:
        if self.prompt_head not in PROMPT_HEADS:
            raise WpsSamError(f"prompt_head {self.prompt_head!r}: choose one of {list(PROMPT_HEADS)}")
        if self.queries not in QUERY_SOURCES:
            raise WpsSamError(f"queries {self.queries!r}: choose one of {list(QUERY_SOURCES)}")

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
    tokens: Tensor | None  # B x Q x num_prompt_tokens x prompt_dim (None until WPSSAM encodes `coords`)
    coords: Tensor | None = None  # box/point heads: B x Q x 4 (x1, y1, x2, y2) / B x Q x 2 (x, y), in [0, 1]


class Prompter(nn.Module):
    """SAM image embedding (B x prompt_dim x S x S) -> per query a class and 2 SAM prompt tokens."""

    def __init__(self, cfg: PrompterConfig, embedding_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding_size = embedding_size
        num_downsamples = neck_num_downsamples(embedding_size, cfg)
        self.neck = ConvNeck(cfg.prompt_dim, cfg.hidden_dim, num_downsamples)
        self.transformer = DetrTransformer(
            cfg.hidden_dim, cfg.num_heads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward, cfg.dropout
        )
        self.grid_size = -(-embedding_size // 2 ** num_downsamples)  # stride-2 convs with padding 1 round up
        self.query_embed = nn.Embedding(cfg.num_queries, cfg.hidden_dim) if cfg.queries == "learned" else None
        self.class_head = nn.Linear(cfg.hidden_dim, cfg.num_classes + 1)
        out_dim = PROMPT_HEADS[cfg.prompt_head] or cfg.num_prompt_tokens * cfg.prompt_dim
        self.prompt_head = MLP(cfg.hidden_dim, cfg.hidden_dim, out_dim, 3)

    @property
    def no_object_index(self) -> int:
        return self.cfg.num_classes

    @property
    def num_queries(self) -> int:
        return self.cfg.num_queries if self.cfg.queries == "learned" else self.grid_size ** 2

    def _cell_centres(self, h: int, w: int, like: Tensor) -> Tensor:
        """(h*w) x 2 centres (x, y) of the grid cells, in [0, 1] of SAM's input frame (row-major)."""
        ys = (torch.arange(h, device=like.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=like.device, dtype=torch.float32) + 0.5) / w
        return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(h * w, 2).to(like.dtype)

    def forward(self, image_embeddings: Tensor, all_layers: bool = False) -> PrompterOutput | list[PrompterOutput]:
        """One PrompterOutput; with `all_layers`, one per decoder layer (the last is the prediction)."""
        if image_embeddings.shape[1] != self.cfg.prompt_dim:
            raise WpsSamError(
                f"image embedding has {image_embeddings.shape[1]} channels, prompter expects {self.cfg.prompt_dim}"
            )
        feats = self.neck(image_embeddings)
        b, _, h, w = feats.shape
        pos = sine_position_embedding(b, self.cfg.hidden_dim, h, w, feats.device, feats.dtype)
        hs = self.transformer(feats, pos, self.query_embed.weight if self.query_embed is not None else None, all_layers)
        if all_layers:
            return [self._heads(layer_hs, h, w) for layer_hs in hs]
        return self._heads(hs, h, w)

    def _heads(self, hs: Tensor, h: int, w: int) -> PrompterOutput:
        """B x Q x hidden decoder output -> class logits and the prompt (tokens or coordinates)."""
        b = hs.shape[0]
        logits = self.class_head(hs)
        raw = self.prompt_head(hs)
        q = hs.shape[1]
        if self.cfg.prompt_head == "tokens":
            return PrompterOutput(logits, raw.view(b, q, self.cfg.num_prompt_tokens, self.cfg.prompt_dim))
        xy = raw[..., :2]
        if self.query_embed is None:  # grid queries: offsets from the cell centre (in logit space, so it stays in [0, 1])
            xy = xy + torch.logit(self._cell_centres(h, w, raw))
        if self.cfg.prompt_head == "point":
            return PrompterOutput(logits, None, xy.sigmoid())
        centre, size = xy.sigmoid(), raw[..., 2:].sigmoid()  # DETR's parametrisation: x1 <= x2, y1 <= y2 by construction
        return PrompterOutput(logits, None, torch.cat([centre - size / 2, centre + size / 2], dim=-1))
