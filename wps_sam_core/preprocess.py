"""SamPredictor-identical preprocessing and coordinate mapping.

We reuse the official `ResizeLongestSide` (PIL bilinear resize of the uint8 image) and
`Sam.preprocess` (pixel mean/std, bottom-right zero padding), so embeddings, teacher tokens and
decoded masks match `segment_anything.SamPredictor` exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from .errors import WpsSamError


def to_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return an HxWx3 uint8 RGB view/copy of `image`.

    Accepted: HxWx3 RGB; HxW or HxWx1 grayscale (replicated to 3 channels); HxWx4 RGBA (alpha
    dropped, colour kept as is — no premultiplication). Anything else is rejected by name.
    """
    if not isinstance(image, np.ndarray):
        raise WpsSamError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise WpsSamError(
            f"{name}: expected dtype uint8 (0..255), got {image.dtype}; scale and convert it first"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        rgb = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 3:
        rgb = image
    elif image.ndim == 3 and image.shape[2] == 4:
        rgb = image[:, :, :3]
    else:
        raise WpsSamError(
            f"{name}: expected HxW, HxWx1, HxWx3 or HxWx4, got shape {tuple(image.shape)}"
        )
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise WpsSamError(f"{name}: empty image of shape {tuple(image.shape)}")
    return np.ascontiguousarray(rgb)


@dataclass(frozen=True)
class ImageGeometry:
    """Sizes of one image through the pipeline, (H, W) each."""

    original_size: tuple[int, int]
    input_size: tuple[int, int]  # after ResizeLongestSide, before padding


class SamTransform:
    """Image resize and prompt-coordinate mapping for a SAM of input side `image_size`."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self.resize = ResizeLongestSide(image_size)

    def geometry(self, original_size: tuple[int, int]) -> ImageGeometry:
        h, w = original_size
        input_size = ResizeLongestSide.get_preprocess_shape(h, w, self.image_size)
        if min(input_size) < 1:  # e.g. 20000x10 at 256 px: the official resize would fail inside PIL
            raise WpsSamError(f"image of {h}x{w} px is too elongated: its short side would be 0 px at the "
                              f"{self.image_size}-px model input (aspect ratio must stay below {2 * self.image_size}:1)")
        return ImageGeometry((h, w), input_size)

    def resize_image(self, rgb: np.ndarray) -> tuple[torch.Tensor, ImageGeometry]:
        """uint8 HxWx3 -> float 3xhxw tensor (unnormalised, unpadded) and its geometry."""
        geometry = self.geometry(rgb.shape[:2])  # first: it refuses sizes the resize cannot take
        resized = self.resize.apply_image(rgb)
        tensor = torch.as_tensor(resized).permute(2, 0, 1).contiguous().float()
        return tensor, geometry

    def boxes_to_input(self, boxes_xyxy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Boxes in original pixels -> the resized input frame SAM's prompt encoder expects."""
        return self.resize.apply_boxes(np.asarray(boxes_xyxy, dtype=np.float64), original_size)

    def points_to_input(self, points_xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        return self.resize.apply_coords(np.asarray(points_xy, dtype=np.float64), original_size)

    def boxes_to_original(self, boxes_xyxy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Inverse of `boxes_to_input`."""
        (h, w), (nh, nw) = original_size, self.geometry(original_size).input_size
        out = np.asarray(boxes_xyxy, dtype=np.float64).copy()
        out[..., 0::2] *= w / nw
        out[..., 1::2] *= h / nh
        return out


def normalize_and_pad(sam, images: list[torch.Tensor]) -> torch.Tensor:
    """Stack resized images into one SAM input batch with the official `Sam.preprocess`."""
    return torch.cat([sam.preprocess(img.to(sam.pixel_mean.device)[None]) for img in images], dim=0)


def sam_input_batch(images: list[torch.Tensor], image_size: int) -> torch.Tensor:
    """`normalize_and_pad` without a SAM module: the same arithmetic as `Sam.preprocess` (SAM's pixel mean/std,
    bottom-right zero padding to image_size), on CPU, for every backend (tested bit-identical)."""
    from .modeling.sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD  # the constants build_sam gives Sam

    mean = torch.tensor(SAM_PIXEL_MEAN).view(-1, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(-1, 1, 1)
    return torch.cat([torch.nn.functional.pad((img[None] - mean) / std,
                                              (0, image_size - img.shape[-1], 0, image_size - img.shape[-2]))
                      for img in images], dim=0)
