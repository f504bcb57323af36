"""Embedding cache: run the frozen SAM encoder once per image (and flip variant), reuse every epoch.

Layout of a cache folder:
  manifest.json          provenance (SAM type, checkpoint hash, preprocessing) + entries + finished shards
  shard_00000.safetensors fp16 embeddings, tensor name = entry index

Shards and the manifest are written atomically, the manifest after each shard: a killed build leaves
only finished shards listed, and a rerun continues from there (finished shards are not redone). A
cache whose provenance differs from the model's is refused, never silently used.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam

from ..errors import WpsSamError
from ..io_utils import atomic_path, atomic_write_text
from ..modeling.sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from ..preprocess import SamTransform, normalize_and_pad

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
VARIANTS = ("orig", "hflip")


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
            raise WpsSamError(f"no embedding cache at {self.root} (manifest.json missing)")
        try:
            manifest = json.loads(manifest_path.read_text())
            self.provenance = manifest["provenance"]
            self.shard_size = int(manifest["shard_size"])
            self.finished = set(manifest["finished_shards"])
            self.entries = [CacheEntry(e["key"], e["variant"], tuple(e["original_size"]), tuple(e["input_size"]), e["shard"])
                            for e in manifest["entries"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise WpsSamError(f"corrupt cache manifest {manifest_path}: {exc}") from None
        self.index = {(e.key, e.variant): i for i, e in enumerate(self.entries)}
        self._handles: dict[int, object] = {}

    @property
    def complete(self) -> bool:
        return {e.shard for e in self.entries} <= self.finished

    def check(self, provenance: CacheProvenance, keys: Sequence[str] | None = None) -> None:
        """Refuse a stale cache (other SAM, weights or preprocessing) or one missing images."""
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


def build_cache(
    root: str | Path,
    sam: Sam,
    provenance: CacheProvenance,
    items: Sequence[tuple[str, Callable[[], np.ndarray]]],
    variants: Sequence[str] = ("orig",),
    shard_size: int = 64,
    batch_size: int = 4,
    progress: bool = True,
) -> EmbeddingCache:
    """Encode `items` (key, image loader) with `sam`'s image encoder into a cache at `root`, resuming a
    killed build."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    root = Path(root)
    bad = sorted(set(variants) - set(VARIANTS))
    if bad:
        raise WpsSamError(f"unknown cache variants {bad}; choose from {VARIANTS}")
    plan = [(key, variant) for key, _ in items for variant in variants]
    loaders = dict(items)
    manifest_path = root / "manifest.json"
    finished: set[int] = set()
    if manifest_path.exists():
        existing = EmbeddingCache(root)
        same_plan = [(e.key, e.variant) for e in existing.entries] == plan and existing.shard_size == shard_size
        if existing.provenance != provenance.to_json() or not same_plan:
            raise WpsSamError(
                f"{root} holds a cache for other weights, preprocessing or images; use an empty folder or delete it"
            )
        finished = {s for s in existing.finished if (root / shard_name(s)).is_file()}
    transform = SamTransform(sam.image_encoder.img_size)
    device = next(sam.image_encoder.parameters()).device
    entries: list[dict] = []
    for i, (key, variant) in enumerate(plan):  # geometry needs only sizes: cheap, done for every entry
        entries.append({"key": key, "variant": variant, "shard": i // shard_size})
    num_shards = (len(plan) + shard_size - 1) // shard_size

    def write_manifest() -> None:
        atomic_write_text(manifest_path, json.dumps({
            "format_version": CACHE_FORMAT_VERSION, "provenance": provenance.to_json(), "shard_size": shard_size,
            "finished_shards": sorted(finished), "entries": entries,
        }, indent=1))

    geometry_known = manifest_path.exists()
    if geometry_known:  # reuse sizes recorded by the interrupted run
        old = json.loads(manifest_path.read_text())["entries"]
        for new, prev in zip(entries, old):
            new.update(original_size=prev["original_size"], input_size=prev["input_size"])
    else:
        for e in entries:
            e.update(original_size=[0, 0], input_size=[0, 0])
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".*.tmp"):  # left by a killed build (atomic_path cleans up on errors, not on SIGKILL)
        stale.unlink()
    todo = [s for s in range(num_shards) if s not in finished]
    if finished:
        log.info("resuming cache %s: %d of %d shards already done", root, len(finished), num_shards)
    done = sum(1 for e in entries if e["shard"] in finished)
    bar = tqdm(total=len(plan), initial=done, disable=not progress, desc="caching embeddings", unit="img")
    for shard in todo:
        tensors: dict[str, torch.Tensor] = {}
        indices = list(range(shard * shard_size, min(len(plan), (shard + 1) * shard_size)))
        for start in range(0, len(indices), batch_size):
            chunk = indices[start: start + batch_size]
            resized = []
            for i in chunk:
                key, variant = plan[i]
                rgb = loaders[key]()
                if variant == "hflip":
                    rgb = np.ascontiguousarray(rgb[:, ::-1])
                tensor, geometry = transform.resize_image(rgb)
                entries[i].update(original_size=list(geometry.original_size), input_size=list(geometry.input_size))
                resized.append(tensor)
            with torch.inference_mode():
                embeddings = sam.image_encoder(normalize_and_pad(sam, resized).to(device))
            for i, emb in zip(chunk, embeddings):
                tensors[str(i)] = emb.half().cpu().contiguous()
            bar.update(len(chunk))
        with atomic_path(root / shard_name(shard)) as tmp:
            save_file(tensors, str(tmp))
        finished.add(shard)
        write_manifest()
    bar.close()
    if not todo:
        write_manifest()
    return EmbeddingCache(root)
