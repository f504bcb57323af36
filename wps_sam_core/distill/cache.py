"""Embedding cache: run the frozen SAM encoder once per image (and flip variant), reuse every epoch.

Layout of a cache folder (this module reads it; cache_build.py builds it, in one process or on many):
  manifest.json          provenance (SAM type, checkpoint hash, preprocessing) + entries + finished shards
                         + the sha1 of each image file's bytes ("images": key -> sha1); written once, atomically,
                         when every shard is there: a manifest means a complete cache
  shard_00000.safetensors fp16 embeddings, tensor name = entry index; the header lists the shard's entries
  build.json             only while a build is unfinished: what it builds (a rerun continues it)

A cache whose provenance differs from the model's, or whose images are not the dataset's (same file name,
other bytes), is refused, never silently used. Caches of format 1 (no image hashes) are refused with a
line saying to rebuild them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import torch
from segment_anything.modeling import Sam

from ..errors import WpsSamError
from ..io_utils import file_hexdigest
from ..modeling.sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2  # 2: per-image content hashes ("images" in the manifest)
VARIANTS = ("orig", "hflip")
BUILD_FILE = "build.json"  # what an unfinished build builds (cache_build.py); gone once manifest.json is written
NO_HASH = ""  # an image cached from memory (a loader, not a file): its content cannot be checked later
ImageSource = Union[str, os.PathLike, Callable[[], np.ndarray]]  # an image file, or a loader of RGB uint8


def image_sha1(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha1 of an image file's bytes: what identifies a cached image beyond its name (about 1 GB/s)."""
    return file_hexdigest(path, hashlib.sha1(usedforsecurity=False), chunk)


def _examples(keys: Sequence[str], n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


@dataclass(frozen=True)
class CacheProvenance:
    """Everything that changes an embedding; a cache is valid only for an equal provenance."""

    sam_type: str
    sam_checkpoint_sha256: str  # "" = random/unknown weights: then `sam_weights_sha256` decides
    sam_weights_sha256: str  # hash of the encoder tensors actually used
    image_size: int
    pixel_mean: tuple[float, ...] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, ...] = SAM_PIXEL_STD
    resize: str = "segment_anything.ResizeLongestSide(PIL bilinear)+bottom-right pad"
    format_version: int = CACHE_FORMAT_VERSION

    def to_json(self) -> dict:
        data = asdict(self)
        data["pixel_mean"], data["pixel_std"] = list(self.pixel_mean), list(self.pixel_std)
        return data


def provenance_for(sam: Sam, sam_type: str, sam_checkpoint_sha256: str = "") -> CacheProvenance:
    """The provenance of embeddings made by `sam`'s image encoder (its weights are hashed)."""
    from ..checkpoint import tensors_sha256

    return CacheProvenance(
        sam_type=sam_type,
        sam_checkpoint_sha256=sam_checkpoint_sha256,
        sam_weights_sha256=tensors_sha256(sam.image_encoder.state_dict()),
        image_size=sam.image_encoder.img_size,
    )


@dataclass(frozen=True)
class CacheEntry:
    key: str  # image identity (file name / id) — the dataset's key
    variant: str  # "orig" or "hflip"
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    shard: int


class EmbeddingCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            if (self.root / BUILD_FILE).is_file():
                raise WpsSamError(f"embedding cache {self.root} is unfinished (a build was stopped; no manifest.json "
                                  f"yet); rerun the same `wps-sam cache` command to finish it")
            raise WpsSamError(f"no embedding cache at {self.root} (manifest.json missing)")
        try:
            manifest = json.loads(manifest_path.read_text())
            self.format_version = int(manifest.get("format_version", 1))
            self.provenance = manifest["provenance"]
            self.shard_size = int(manifest["shard_size"])
            self.finished = set(manifest["finished_shards"])
            self.entries = [CacheEntry(e["key"], e["variant"], tuple(e["original_size"]), tuple(e["input_size"]), e["shard"])
                            for e in manifest["entries"]]
            self.image_hashes: dict[str, str] = dict(manifest.get("images", {}))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WpsSamError(f"corrupt cache manifest {manifest_path}: {exc}") from None
        self.index = {(e.key, e.variant): i for i, e in enumerate(self.entries)}
        self._handles: dict[int, object] = {}

    @property
    def complete(self) -> bool:
        return {e.shard for e in self.entries} <= self.finished

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(v for v in VARIANTS if any(e.variant == v for e in self.entries))

    def refuse_old_format(self) -> None:
        if self.format_version < CACHE_FORMAT_VERSION:
            raise WpsSamError(
                f"embedding cache {self.root} has format {self.format_version}, which records no image content "
                f"hashes, so nothing tells whether its images are the dataset's; rebuild it with `wps-sam cache` "
                f"into an empty folder (or delete this one first)")

    def check(self, provenance: CacheProvenance,
              keys: Mapping[str, str | os.PathLike] | Sequence[str] | None = None) -> None:
        """Refuse a stale cache (older format, other SAM, weights or preprocessing), an incomplete one, or one
        missing images. `keys`: the dataset's image keys, or better a mapping key -> image file, whose bytes
        must then be those that were cached (same file name, other content is refused)."""
        self.refuse_old_format()
        expected = provenance.to_json()
        diff = sorted(k for k in expected if self.provenance.get(k) != expected[k])
        if diff:
            raise WpsSamError(
                f"stale embedding cache {self.root}: {', '.join(f'{k} is {self.provenance.get(k)!r}, model has {expected[k]!r}' for k in diff[:3])}; rebuild it with `wps-sam cache`"
            )
        if not self.complete:
            raise WpsSamError(f"embedding cache {self.root} is incomplete; rerun `wps-sam cache` to finish it")
        if keys is not None:
            missing = sorted({k for k in keys} - {e.key for e in self.entries})
            if missing:
                raise WpsSamError(f"embedding cache {self.root} lacks {len(missing)} images, e.g. {missing[:3]}")
        if isinstance(keys, Mapping):
            self.verify_images(keys)

    def verify_images(self, files: Mapping[str, str | os.PathLike]) -> None:
        """Refuse when an image file's bytes differ from those cached under its key. Images cached from memory
        (a loader, no file) have no hash to compare: they are named in a warning."""
        self.refuse_old_format()
        unverifiable = sorted(k for k in files if self.image_hashes.get(k, NO_HASH) == NO_HASH)
        if unverifiable:
            log.warning("embedding cache %s: %d images were cached from memory, not from files, so their content "
                        "cannot be checked against the image files (e.g. %s)", self.root, len(unverifiable),
                        _examples(unverifiable))
        changed = sorted(k for k, path in files.items()
                         if self.image_hashes.get(k, NO_HASH) != NO_HASH and image_sha1(path) != self.image_hashes[k])
        if changed:
            raise WpsSamError(
                f"embedding cache {self.root} was built from other images: {len(changed)} of {len(files)} image files "
                f"have the cached names but other content, e.g. {_examples(changed)}; rebuild it with `wps-sam cache` "
                f"into an empty folder")

    def has(self, key: str, variant: str = "orig") -> bool:
        return (key, variant) in self.index

    def get(self, key: str, variant: str = "orig") -> tuple[torch.Tensor, CacheEntry]:
        """(C x s x s float32 embedding, entry); shards are memory-mapped, opened once per process."""
        from safetensors import safe_open

        i = self.index[(key, variant)]
        entry = self.entries[i]
        handle = self._handles.get(entry.shard)
        if handle is None:
            handle = safe_open(str(self.root / shard_name(entry.shard)), framework="pt", device="cpu")
            self._handles[entry.shard] = handle
        return handle.get_tensor(str(i)).float(), entry

    def __getstate__(self):  # DataLoader workers reopen shards themselves
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state


def shard_name(shard: int) -> str:
    return f"shard_{shard:05d}.safetensors"


def __getattr__(name: str):
    """`build_cache` lives in cache_build.py (which imports this module); importable from here as before."""
    if name == "build_cache":
        from .cache_build import build_cache

        return build_cache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
