"""The interface a backend implements: the three model stages of a frame, nothing else."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class Runner(ABC):
    """Runs SAM's image encoder, the prompter and SAM's mask decoder; safe to call from several threads.

    Tensors in and out are torch tensors (embeddings may be a backend's own device-resident value, passed
    back to it unchanged); the caller does everything between the stages.
    """

    backend: str  # "torch" | "onnxruntime" (backends.BACKENDS)
    image_size: int  # side of SAM's square input
    num_classes: int  # part classes of the prompter (its logits have one more: no object)
    device: torch.device  # where the outputs of `prompt` and `decode` live
    precision: str  # "fp32" | "bf16" | "fp16"

    @property
    @abstractmethod
    def provider(self) -> str:
        """What executes the graphs, for logs and /diagnostics (e.g. "CPUExecutionProvider")."""

    @abstractmethod
    def encode(self, batch: torch.Tensor) -> Any:
        """B x 3 x S x S normalised, padded images (CPU float32) -> B x C x s x s embeddings."""

    @abstractmethod
    def prompt(self, embeddings: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (from `encode`, or a torch tensor from a cache) -> (float32 logits B x Q x K+1,
        tokens B x Q x T x C)."""

    @abstractmethod
    def decode(self, embeddings: Any, image_index: torch.Tensor, tokens: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """M kept prompts of the batch in ONE decoder pass -> (float32 low-res logits M x 1 x 4s x 4s, float32
        IoU predictions M), both on `device`."""
