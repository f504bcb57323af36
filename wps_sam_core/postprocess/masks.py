"""Low-res decoder logits -> logits at the original image size: SAM's `postprocess_masks` without a SAM module,
so every backend upsamples with the same code (tested equal to the official method)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def upscale_masks(low_res: torch.Tensor, image_size: int, input_size: tuple[int, int],
                  original_size: tuple[int, int]) -> torch.Tensor:
    """K x 1 x h x w -> K x 1 x H x W: bilinear to SAM's square input, crop the padding, bilinear to the original."""
    masks = F.interpolate(low_res, (image_size, image_size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)
