"""Registry of SAM configurations over the official `segment_anything` classes; safe loading.

Every configuration is built from the *official* modules (ImageEncoderViT, PromptEncoder,
MaskDecoder, TwoWayTransformer) with the hyper-parameters of `segment_anything.build_sam`, so an
official checkpoint (`sam_vit_b_01ec64.pth`, ...) loads strictly. Checkpoints are read with
`torch.load(weights_only=True)` or safetensors only: no pickled code ever runs.
"""
from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Mapping

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..errors import WpsSamError

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

OFFICIAL_CHECKPOINT_NAMES = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}


@dataclass(frozen=True)
class SamConfig:
    """Hyper-parameters of one SAM; defaults are those of the official `_build_sam`."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    encoder: str = "vit"  # "vit" (ImageEncoderViT) or "tiny_vit" (MobileSAM's vit_t)

    @property
    def embedding_size(self) -> int:
        """Side of the square image embedding (64 for the official 1024-px models)."""
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)


SAM_CONFIGS: dict[str, SamConfig] = {
    "vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    # Same classes at toy size: 256-px input, 16x16 embedding. The embedded default model and
    # the tests use it; it is trained in the procedural world (training/pretrain_tiny_sam.py).
    "tiny": SamConfig(
        encoder_embed_dim=128, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=(1, 3),
        image_size=256, window_size=8, prompt_embed_dim=128, decoder_mlp_dim=512,
        decoder_num_heads=4, iou_head_hidden_dim=128, mask_in_chans=8,
    ),
    # MobileSAM's light encoder (TinyViT, per-stage numbers in sam_vit_t.py): official 1024-px input,
    # 256 x 64 x 64 embedding, SAM's prompt encoder and mask decoder. The ViT fields summarise it
    # (last-stage width, total depth, last-stage heads); only `encoder` selects the class.
    "vit_t": SamConfig(320, 12, 10, (), encoder="tiny_vit"),
}


def get_sam_config(sam_type: str) -> SamConfig:
    try:
        return SAM_CONFIGS[sam_type]
    except KeyError:
        raise WpsSamError(f"unknown SAM type {sam_type!r}; choose one of {sorted(SAM_CONFIGS)}") from None


def build_sam(sam_type: str) -> Sam:
    """Build a SAM of a registered type with random weights (load weights with `load_sam`)."""
    cfg = get_sam_config(sam_type)
    if cfg.encoder == "tiny_vit":
        from .sam_vit_t import build_tiny_vit_encoder  # optional dependency (MobileSAM)

        image_encoder = build_tiny_vit_encoder(cfg)
    else:
        image_encoder = ImageEncoderViT(
            depth=cfg.encoder_depth,
            embed_dim=cfg.encoder_embed_dim,
            img_size=cfg.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=cfg.encoder_num_heads,
            patch_size=cfg.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=cfg.encoder_global_attn_indexes,
            window_size=cfg.window_size,
            out_chans=cfg.prompt_embed_dim,
        )
    side = cfg.embedding_size
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=cfg.prompt_embed_dim,
            image_embedding_size=(side, side),
            input_image_size=(cfg.image_size, cfg.image_size),
            mask_in_chans=cfg.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=cfg.prompt_embed_dim,
                mlp_dim=cfg.decoder_mlp_dim,
                num_heads=cfg.decoder_num_heads,
            ),
            transformer_dim=cfg.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


def freeze(sam: Sam) -> Sam:
    """SAM stays frozen: no gradients, eval mode (WPSSAM.train() keeps it so)."""
    sam.eval()
    sam.requires_grad_(False)
    return sam


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a `.pth`/`.pt` (weights_only unpickling) or `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise WpsSamError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise WpsSamError(f"checkpoint is empty (0 bytes): {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WpsSamError(f"corrupt safetensors checkpoint {path}: {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WpsSamError(
            f"refusing to load {path}: it holds pickled Python objects beyond tensors, and "
            f"weights_only loading never runs code from a file ({refusal_reason(exc)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WpsSamError(f"corrupt or truncated checkpoint {path}: {first}") from None
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # some training frameworks nest the weights
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WpsSamError(f"{path} is not a state dict of tensors")
    return dict(state)


def refusal_reason(exc: pickle.UnpicklingError) -> str:
    """The line of torch's weights_only refusal naming the blocked object, not its advice to turn it off."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (specific or lines or [type(exc).__name__])[0]


def guess_sam_type(state: Mapping[str, torch.Tensor]) -> str | None:
    """Name the registered SAM type whose layout a state dict has, or None."""
    if any(k.startswith("image_encoder.layers.") for k in state):
        return "vit_t"  # MobileSAM's TinyViT encoder
    patch = state.get("image_encoder.patch_embed.proj.weight")
    pos = state.get("image_encoder.pos_embed")
    if patch is None or pos is None:
        return None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, cfg in SAM_CONFIGS.items():
        if (
            cfg.encoder == "vit"
            and patch.shape[0] == cfg.encoder_embed_dim
            and depth == cfg.encoder_depth
            and pos.shape[1] * cfg.patch_size == cfg.image_size
        ):
            return name
    return None


def _short_list(keys: list[str], limit: int = 5) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_strict(sam: Sam, state: Mapping[str, torch.Tensor], sam_type: str, source: str) -> None:
    """Load SAM weights, refusing any missing, unexpected or mis-shaped key with a clear error."""
    expected = sam.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys: {_short_list(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_short_list(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches: {_short_list(mismatched, 3)}")
        fits = guess_sam_type(state)
        hint = f"; its keys fit SAM type {fits!r}" if fits and fits != sam_type else ""
        raise WpsSamError(f"{source} does not fit SAM type {sam_type!r}: {'; '.join(problems)}{hint}")
    sam.load_state_dict(state, strict=True)


RANDOM_WEIGHTS = "random"  # --sam-checkpoint random / model.sam_checkpoint: random: the explicit opt-in


def sam_weights_path(checkpoint: str | Path | None, flag: str = "--sam-checkpoint") -> Path | None:
    """The SAM checkpoint to load, or None for random weights when they were asked for by name ("random").

    Nothing given is refused: a prompter on random SAM weights segments noise, and a cache or a training
    run on them is silently worthless; `flag` names the option the user sets (CLI flag, config key, parameter).
    """
    if checkpoint is None or str(checkpoint).strip() == "":
        raise WpsSamError(f"no SAM checkpoint: pass {flag} PATH (an official SAM checkpoint), or "
                          f"{flag} {RANDOM_WEIGHTS} for random weights (tests and smoke runs only)")
    if str(checkpoint) == RANDOM_WEIGHTS:
        return None
    return Path(checkpoint)


def load_sam(sam_type: str, checkpoint: str | Path | None = None, state: Mapping | None = None) -> Sam:
    """Build a frozen SAM of `sam_type`, with weights from `checkpoint` or `state` (else random)."""
    sam = build_sam(sam_type)
    if checkpoint is not None:
        load_state_strict(sam, read_state_dict(checkpoint), sam_type, str(checkpoint))
    elif state is not None:
        load_state_strict(sam, state, sam_type, "state dict")
    return freeze(sam)
