"""The PyTorch backend: the WPSSAM modules themselves (CPU or CUDA, fp32 or autocast bf16/fp16)."""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

import torch

from ..errors import WpsSamError
from ..modeling.wpssam import WPSSAM
from .base import Runner

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_PRECISION = "fp32"
DEFAULT_DEVICE = "auto"  # cuda if available, else cpu


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WpsSamError(f"device {device!r} requested but CUDA is not available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise WpsSamError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: WPSSAM, device: str = DEFAULT_DEVICE, precision: str = DEFAULT_PRECISION) -> None:
        if precision not in PRECISIONS:
            raise WpsSamError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(device)
        if precision != "fp32" and self.device.type != "cuda":
            log.warning("precision %s needs a GPU; running fp32 on %s", precision, self.device)
            precision = "fp32"
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.image_size = model.image_size
        self.num_classes = model.prompter.cfg.num_classes

    @property
    def provider(self) -> str:
        return f"torch {self.device}"

    def autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model.sam.image_encoder(batch.to(self.device))

    @torch.inference_mode()
    def prompt(self, embeddings: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            out = self.model(embeddings.to(self.device))
        return out.logits.float(), out.tokens

    @torch.inference_mode()
    def decode(self, embeddings: Any, image_index: torch.Tensor, tokens: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = embeddings.to(self.device)
        with self.autocast():
            low_res, ious = self.model.decode(embeddings, image_index.to(self.device), tokens.to(self.device))
        return low_res.float(), ious.float()
