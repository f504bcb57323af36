"""MobileSAM's light image encoder (TinyViT `vit_t`) behind SAM's official interface.

The encoder class comes from the `mobilesam-mirror` package (module `mobile_sam`, needs `timm`),
built with the hyper-parameters of MobileSAM's `build_sam_vit_t`, so MobileSAM's `mobile_sam.pt`
loads strictly into `build_sam("vit_t")`: a 1024-px input gives the same 256 x 64 x 64 embedding
as vit_b/l/h, and the prompt encoder and mask decoder are SAM's own. Install with
`pip install wps_sam_ros[light]`.
"""
from __future__ import annotations

import warnings

from torch import nn

from ..errors import WpsSamError

# MobileSAM's `build_sam_vit_t` (the one source of these numbers in this project).
TINY_VIT_EMBED_DIMS = (64, 128, 160, 320)
TINY_VIT_DEPTHS = (2, 2, 6, 2)
TINY_VIT_NUM_HEADS = (2, 4, 5, 10)
TINY_VIT_WINDOW_SIZES = (7, 7, 14, 7)
TINY_VIT_MLP_RATIO = 4.0
TINY_VIT_MBCONV_EXPAND_RATIO = 4.0
TINY_VIT_LOCAL_CONV_SIZE = 3
TINY_VIT_LAYER_LR_DECAY = 0.8  # sets `lr_scale` attributes only; kept for an identical module
TINY_VIT_NUM_CLASSES = 1000  # its unused classifier head is part of MobileSAM's checkpoint layout


def import_tiny_vit() -> type:
    """The TinyViT class of MobileSAM, or a clear error naming the package to install."""
    try:
        with warnings.catch_warnings():  # mobile_sam re-registers timm's tiny_vit names and uses old timm paths
            warnings.simplefilter("ignore")
            from mobile_sam.modeling import TinyViT
    except ImportError as exc:
        raise WpsSamError(
            f"SAM type 'vit_t' needs MobileSAM's encoder: pip install mobilesam-mirror timm "
            f"(or wps_sam_ros[light]); import failed: {exc}"
        ) from None
    return TinyViT


def build_tiny_vit_encoder(cfg) -> nn.Module:
    """TinyViT for a `SamConfig` with encoder="tiny_vit" (random weights; load with `load_sam`)."""
    if cfg.image_size != 1024 or cfg.embedding_size != 64 or cfg.prompt_embed_dim != 256:
        # TinyViT's forward reshapes to a fixed 64 x 64 grid and its neck outputs 256 channels
        raise WpsSamError(
            f"MobileSAM's TinyViT needs a 1024-px input, 64x64 grid and 256-d embedding; "
            f"got {cfg.image_size} px, {cfg.embedding_size}x{cfg.embedding_size}, {cfg.prompt_embed_dim}-d"
        )
    tiny_vit = import_tiny_vit()
    return tiny_vit(
        img_size=cfg.image_size,
        in_chans=3,
        num_classes=TINY_VIT_NUM_CLASSES,
        embed_dims=list(TINY_VIT_EMBED_DIMS),
        depths=list(TINY_VIT_DEPTHS),
        num_heads=list(TINY_VIT_NUM_HEADS),
        window_sizes=list(TINY_VIT_WINDOW_SIZES),
        mlp_ratio=TINY_VIT_MLP_RATIO,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=TINY_VIT_MBCONV_EXPAND_RATIO,
        local_conv_size=TINY_VIT_LOCAL_CONV_SIZE,
        layer_lr_decay=TINY_VIT_LAYER_LR_DECAY,
    )
