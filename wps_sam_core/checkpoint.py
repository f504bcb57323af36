"""Prompter checkpoints: safetensors with only the trainable weights plus metadata.

SAM weights are referenced (type, and the hash of the SAM checkpoint when known), never
copied. The class-to-object table ({part class: object class}, metadata "part_objects") travels with
the class names; a checkpoint written before it existed gets it derived from the class names
("mug_handle" -> "mug"; a one-word name -> "unknown", with a warning: postprocess/objects.py).
A content hash over the tensors is stored and verified on load; files are written atomically.
Loading never unpickles anything.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import WpsSamError
from .io_utils import atomic_path
from .modeling.prompter import Prompter, PrompterConfig
from .postprocess.objects import UNKNOWN_OBJECT, derive_object_classes, object_table

log = logging.getLogger(__name__)

FORMAT_NAME = "wps_sam_prompter"
FORMAT_VERSION = 1


@dataclass
class PrompterCheckpoint:
    config: PrompterConfig
    class_names: list[str]
    sam_type: str
    image_size: int
    state_dict: dict[str, torch.Tensor]
    sam_checkpoint_sha256: str = ""  # empty: random/unknown SAM weights
    info: dict[str, Any] = field(default_factory=dict)  # free-form: training run, metrics, seeds
    object_classes: list[str] = field(default_factory=list)  # object class of each part class; [] = from the names

    def __post_init__(self) -> None:
        if not self.object_classes:
            self.object_classes = list(derive_object_classes(self.class_names))
        if len(self.object_classes) != len(self.class_names):
            raise WpsSamError(f"{len(self.object_classes)} object classes for {len(self.class_names)} part classes")

    def build_prompter(self, embedding_size: int) -> Prompter:
        prompter = Prompter(self.config, embedding_size)
        prompter.load_state_dict(self.state_dict, strict=True)
        return prompter

    def check_compatible(self, sam_type: str, image_size: int, num_classes: int | None = None) -> None:
        """Refuse a prompter trained on another SAM (type/input size) or for another class count."""
        if sam_type != self.sam_type:
            raise WpsSamError(
                f"this prompter was trained on SAM type {self.sam_type!r}, not {sam_type!r}: "
                f"its tokens only make sense to that SAM's mask decoder"
            )
        if image_size != self.image_size:
            raise WpsSamError(f"prompter expects {self.image_size}-px SAM input, the SAM has {image_size}")
        if num_classes is not None and num_classes != len(self.class_names):
            raise WpsSamError(
                f"prompter has {len(self.class_names)} part classes, {num_classes} were expected"
            )

    def check_sam_weights(self, prompter_path: str | Path, sam_checkpoint: str | Path | None, sam_sha256: str,
                          allow_mismatch: bool = False, override: str = "--allow-sam-mismatch") -> None:
        """Refuse SAM weights other than those the prompter was trained on (its recorded sha256).

        `sam_checkpoint` None = random weights (sha ""). A prompter that records no hash (trained on random
        or unknown weights) only gets a warning; `allow_mismatch` turns the refusal into a warning;
        `override` names the way to allow it in the refusal ("" = none offered)."""
        recorded = self.sam_checkpoint_sha256
        if not recorded:
            if sam_checkpoint is not None:
                log.warning("prompter %s records no SAM checkpoint hash (trained on random or unknown SAM weights); "
                            "running it on %s", prompter_path, sam_checkpoint)
            return
        if sam_sha256 == recorded:
            return
        given = f"{sam_checkpoint} has sha256 {sam_sha256[:12]}" if sam_checkpoint is not None else \
            "random SAM weights were asked for"
        message = (f"prompter {prompter_path} was trained on the SAM checkpoint with sha256 {recorded[:12]}, "
                   f"but {given}")
        if allow_mismatch:
            log.warning("%s; running anyway (SAM mismatch allowed)", message)
            return
        raise WpsSamError(f"{message}; pass the SAM checkpoint it was trained with"
                          + (f", or {override} to run it anyway" if override else ""))


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # reshape: a 0-dim tensor (BatchNorm's num_batches_tracked in TinyViT) cannot be viewed as bytes as it is
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def save_prompter_checkpoint(path: str | Path, ckpt: PrompterCheckpoint) -> Path:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "sam_type": ckpt.sam_type,
        "image_size": str(ckpt.image_size),
        "class_names": json.dumps(ckpt.class_names),
        "part_objects": json.dumps(dict(zip(ckpt.class_names, ckpt.object_classes))),
        "prompter_config": json.dumps(ckpt.config.to_dict()),
        "sam_checkpoint_sha256": ckpt.sam_checkpoint_sha256,
        "info": json.dumps(ckpt.info, default=str),
        "content_sha256": tensors_sha256(state),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_prompter_checkpoint(path: str | Path) -> PrompterCheckpoint:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WpsSamError(f"prompter checkpoint not found: {path}")
    if path.suffix != ".safetensors":
        raise WpsSamError(f"{path}: prompter checkpoints are .safetensors files")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WpsSamError(f"corrupt or truncated prompter checkpoint {path}: {exc}") from None
    if meta.get("format") != FORMAT_NAME:
        raise WpsSamError(f"{path} is not a WPS-SAM prompter checkpoint (format={meta.get('format')!r})")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise WpsSamError(f"{path}: unsupported prompter format version {meta.get('format_version')!r}")
    if tensors_sha256(state) != meta.get("content_sha256"):
        raise WpsSamError(f"{path}: content hash mismatch: the weights were modified or damaged")
    try:
        ckpt = PrompterCheckpoint(
            config=PrompterConfig.from_dict(json.loads(meta["prompter_config"])),
            class_names=list(json.loads(meta["class_names"])),
            sam_type=meta["sam_type"],
            image_size=int(meta["image_size"]),
            state_dict=state,
            sam_checkpoint_sha256=meta.get("sam_checkpoint_sha256", ""),
            info=json.loads(meta.get("info", "{}")),
        )
        part_objects = json.loads(meta["part_objects"]) if "part_objects" in meta else None
    except (KeyError, ValueError, TypeError) as exc:
        raise WpsSamError(f"{path}: malformed prompter metadata ({exc})") from None
    if len(ckpt.class_names) != ckpt.config.num_classes:
        raise WpsSamError(f"{path}: {len(ckpt.class_names)} class names for {ckpt.config.num_classes} classes")
    if part_objects is None:  # a warning only where it matters: parts of an unknown object are never grouped
        unknown = [n for n, o in zip(ckpt.class_names, ckpt.object_classes) if o == UNKNOWN_OBJECT]
        log.log(logging.WARNING if unknown else logging.DEBUG,
                "%s records no part-to-object table (written before it existed); derived from the class names: %s",
                path, dict(zip(ckpt.class_names, ckpt.object_classes)))
    else:
        ckpt.object_classes = list(object_table(ckpt.class_names, part_objects, str(path)))
    return ckpt
