"""Training items for distillation: SAM embedding (cached or image to encode) + weak prompts in SAM's frame.

An item is addressed by (dataset index, variant) so the sampler — not the worker — decides flips,
which keeps data order and augmentation a pure function of (seed, epoch): exact resume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.coco import CocoPartDataset
from ..data.weak_labels import WeakLabelConfig, WeakLabels, precompute_weak_labels
from ..errors import WpsSamError
from ..image_io import read_image_rgb
from ..modeling.sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from ..preprocess import SamTransform
from .cache import EmbeddingCache

# Train-config supervision names -> weak-label settings (mixed uses interior clicks for its points).
SUPERVISION_TO_WEAK = {
    "box": ("box", "center"),
    "point_center": ("point", "center"),
    "point_interior": ("point", "interior"),
    "mixed": ("mixed", "interior"),
}


def weak_label_config(supervision: str, seed: int) -> WeakLabelConfig:
    kind, mode = SUPERVISION_TO_WEAK[supervision]
    return WeakLabelConfig(supervision=kind, point_mode=mode, seed=seed)


def dataset_key(dataset: CocoPartDataset, index: int) -> str:
    """The cache key of an image: its file name (unique within a split)."""
    return dataset.instances(index).file_name


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    out = boxes.copy()
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return out


def flip_points(points: np.ndarray, width: int) -> np.ndarray:
    out = points.copy()
    out[:, 0] = width - points[:, 0]
    return out


@dataclass
class DistillItem:
    inputs: torch.Tensor  # C x s x s embedding (cache) or 3 x S x S normalised padded image
    boxes: torch.Tensor  # Nb x 4, SAM input frame
    box_classes: torch.Tensor  # Nb, 0-based
    points: torch.Tensor  # Np x 2, SAM input frame
    point_classes: torch.Tensor  # Np


class DistillDataset(torch.utils.data.Dataset):
    def __init__(self, dataset: CocoPartDataset, weak: dict[int, WeakLabels], image_size: int,
                 cache: EmbeddingCache | None = None) -> None:
        self.dataset = dataset
        self.weak = weak
        self.transform = SamTransform(image_size)
        self.image_size = image_size
        self.cache = cache
        self.mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
        self.std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)

    @classmethod
    def create(cls, dataset: CocoPartDataset, supervision: str, seed: int, image_size: int,
               cache: EmbeddingCache | None) -> "DistillDataset":
        return cls(dataset, precompute_weak_labels(dataset, weak_label_config(supervision, seed)), image_size, cache)

    def __len__(self) -> int:
        return len(self.dataset)

    def _inputs(self, index: int, variant: str) -> torch.Tensor:
        if self.cache is not None:
            key = dataset_key(self.dataset, index)
            if not self.cache.has(key, variant):
                raise WpsSamError(f"embedding cache {self.cache.root} has no {variant!r} entry for {key}")
            return self.cache.get(key, variant)[0]
        rgb = read_image_rgb(self.dataset.image_path(index))
        if variant == "hflip":
            rgb = np.ascontiguousarray(rgb[:, ::-1])
        resized, _ = self.transform.resize_image(rgb)
        x = (resized - self.mean) / self.std  # == Sam.preprocess, done in the worker
        return F.pad(x, (0, self.image_size - x.shape[2], 0, self.image_size - x.shape[1]))

    def __getitem__(self, key: tuple[int, str]) -> DistillItem:
        index, variant = key
        inst = self.dataset.instances(index)
        weak = self.weak[inst.image_id]
        size = (inst.height, inst.width)
        boxes, points = weak.boxes[weak.is_box], weak.points[weak.is_point]
        if variant == "hflip":
            boxes, points = flip_boxes(boxes, inst.width), flip_points(points, inst.width)
        return DistillItem(
            inputs=self._inputs(index, variant),
            boxes=torch.as_tensor(self.transform.boxes_to_input(boxes, size), dtype=torch.float32).reshape(-1, 4),
            box_classes=torch.as_tensor(weak.class_indices[weak.is_box], dtype=torch.long),
            points=torch.as_tensor(self.transform.points_to_input(points, size), dtype=torch.float32).reshape(-1, 2),
            point_classes=torch.as_tensor(weak.class_indices[weak.is_point], dtype=torch.long),
        )


def collate(items: Sequence[DistillItem]) -> dict:
    return {
        "inputs": torch.stack([it.inputs for it in items]),
        "boxes": [it.boxes for it in items], "box_classes": [it.box_classes for it in items],
        "points": [it.points for it in items], "point_classes": [it.point_classes for it in items],
    }


def epoch_batches(num_items: int, batch_size: int, epoch: int, seed: int, rank: int, world_size: int,
                  hflip: bool) -> list[list[tuple[int, str]]]:
    """This rank's batches of (index, variant) for `epoch`: a pure function of its arguments.

    Every rank gets the same number of batches (the permutation wraps around), so DDP stays in step.
    """
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_items, generator=gen).tolist()
    flips = (torch.rand(num_items, generator=gen) < 0.5).tolist() if hflip else [False] * num_items
    per_step = batch_size * world_size
    steps = max(1, num_items // per_step)  # drop the ragged tail: equal, full batches on every rank
    chosen = [order[i % num_items] for i in range(steps * per_step)]
    mine = chosen[rank::world_size]
    keyed = [(i, "hflip" if flips[i] else "orig") for i in mine]
    return [keyed[s * batch_size:(s + 1) * batch_size] for s in range(steps)]
