"""Embedding cache: run the frozen SAM encoder once per image (and flip variant), reuse every epoch.

Layout of a cache folder:
  manifest.json          provenance (SAM type, checkpoint hash, preprocessing) + entries + finished shards
                         + the sha1 of each image file's bytes ("images": key -> sha1)
  shard_00000.safetensors fp16 embeddings, tensor name = entry index

Shards and the manifest are written atomically, the manifest after each shard: a killed build leaves
only finished shards listed, and a rerun continues from there (finished shards are not redone). A
cache whose provenance differs from the model's, or whose images are not the dataset's (same file name,
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
from ..io_utils import atomic_path, atomic_write_text
from ..modeling.sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from ..preprocess import SamTransform, normalize_and_pad

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2  # 2: per-image content hashes ("images" in the manifest)
VARIANTS = ("orig", "hflip")
NO_HASH = ""  # an image cached from memory (a loader, not a file): its content cannot be checked later
ImageSource = Union[str, os.PathLike, Callable[[], np.ndarray]]  # an image file, or a loader of RGB uint8


def image_sha1(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha1 of an image file's bytes: what identifies a cached image beyond its name (about 1 GB/s)."""
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


def _plan_differences(existing: EmbeddingCache, provenance: CacheProvenance, plan: list[tuple[str, str]],
                      variants: Sequence[str], shard_size: int, hashes: dict[str, str]) -> list[str]:
    """What differs between a cache folder and a build asked for, in words (empty: the same build)."""
    diffs: list[str] = []
    old, new = existing.provenance, provenance.to_json()
    diffs += [f"{k} {old.get(k)!r} (cache) vs {new[k]!r} (now)" for k in sorted(new) if old.get(k) != new[k]]
    if existing.shard_size != shard_size:
        diffs.append(f"shard size {existing.shard_size} (cache) vs {shard_size} (now)")
    if set(existing.variants) != set(variants):
        diffs.append(f"variants {'+'.join(existing.variants) or 'none'} (cache) vs {'+'.join(variants)} (now; "
                     f"hflip = --hflip)")
    old_keys = list(dict.fromkeys(e.key for e in existing.entries))
    new_keys = list(dict.fromkeys(key for key, _ in plan))
    gone, added = set(old_keys) - set(new_keys), set(new_keys) - set(old_keys)
    if gone:
        diffs.append(f"{len(gone)} cached images are not in this image list ({_examples(gone)})")
    if added:
        diffs.append(f"{len(added)} images are not in the cache ({_examples(added)})")
    if not (gone or added) and old_keys != new_keys:
        diffs.append("the images are listed in another order")
    changed = [k for k in new_keys if k in existing.image_hashes and existing.image_hashes[k] != hashes[k]]
    if changed:
        diffs.append(f"{len(changed)} images have the cached names but other content ({_examples(changed)})")
    return diffs


def build_cache(
    root: str | Path,
    sam: Sam,
    provenance: CacheProvenance,
    items: Sequence[tuple[str, ImageSource]],
    variants: Sequence[str] = ("orig",),
    shard_size: int = 64,
    batch_size: int = 4,
    progress: bool = True,
) -> EmbeddingCache:
    """Encode `items` (key, image file or loader) with `sam`'s image encoder into a cache at `root`, resuming a
    killed build. Image files are hashed (sha1 of their bytes) into the manifest, so a cache is only ever used
    for the same images; images from loaders get no hash and cannot be checked later (a warning says so). A folder holding
    another cache (other weights, preprocessing, shard size, variants or images) is refused, naming the
    differences."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    from ..image_io import read_image_rgb

    root = Path(root)
    bad = sorted(set(variants) - set(VARIANTS))
    if bad:
        raise WpsSamError(f"unknown cache variants {bad}; choose from {VARIANTS}")
    if shard_size < 1 or batch_size < 1:
        raise WpsSamError(f"shard size and batch size must be >= 1, got {shard_size} and {batch_size}")
    plan = [(key, variant) for key, _ in items for variant in variants]
    loaders = {key: source if callable(source) else (lambda p=source: read_image_rgb(p)) for key, source in items}
    hashes = {key: NO_HASH if callable(source) else image_sha1(source) for key, source in items}
    manifest_path = root / "manifest.json"
    finished: set[int] = set()
    if manifest_path.exists():
        existing = EmbeddingCache(root)
        existing.refuse_old_format()
        diffs = _plan_differences(existing, provenance, plan, variants, shard_size, hashes)
        if diffs:
            raise WpsSamError(f"{root} holds another cache: {'; '.join(diffs)}; use an empty folder or delete it")
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
            "finished_shards": sorted(finished), "images": hashes, "entries": entries,
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
