"""Building an embedding cache (cache.py's format) in one process or on many (Lightning Fabric ranks: GPUs, nodes).

A build is the list of entries (image key, variant) cut into shards of `shard_size` consecutive entries, each
encoded in batches of `batch_size` from the shard's start. What a shard holds is a function of the image list,
variants, shard and batch size, never of the number of processes: a cache built by 1 or by 8 processes is the
same bytes. The unfinished shards, in order, are dealt out round-robin (rank r: the r-th, r+W-th, ... of W
processes) and encoded one round at a time; after each round the ranks exchange their outcome, so an error on one
rank (an unreadable image) stops all of them with one line instead of leaving them waiting, and rank 0 counts the
progress of all. SAM's encoder costs the same for every image (all are resized to one input size), so rounds keep
the ranks in step at the cost of one small exchange per shard.

The folder while building: `build.json` (what is built: provenance, shard size, variants, image keys in order),
written first, and the finished shards. A shard is written atomically and describes itself (its entries' keys,
variants, sizes and image sha1s in the safetensors header), so the shard files present ARE the record of what is
done: no per-rank list, nothing that depends on the number of processes, and a build killed with 8 processes
resumes with 2 (or 1). When every shard is there, rank 0 reads the shard headers, writes `manifest.json`
atomically and removes `build.json`: a manifest appears only for a complete cache.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam

from ..errors import WpsSamError
from ..io_utils import atomic_path, atomic_write_text
from ..preprocess import SamTransform, normalize_and_pad
from .cache import (BUILD_FILE, CACHE_FORMAT_VERSION, NO_HASH, VARIANTS, CacheProvenance, EmbeddingCache,
                    ImageSource, _examples, image_sha1, shard_name)
from .processes import Ranks

log = logging.getLogger(__name__)

SHARD_METADATA_KEY = "wps_sam_cache_entries"  # safetensors header: the shard's entries (json)


def check_build_args(variants: Sequence[str], shard_size: int, batch_size: int) -> None:
    bad = sorted(set(variants) - set(VARIANTS))
    if bad:
        raise WpsSamError(f"unknown cache variants {bad}; choose from {VARIANTS}")
    if shard_size < 1 or batch_size < 1:
        raise WpsSamError(f"shard size and batch size must be >= 1, got {shard_size} and {batch_size}")


def _record(provenance: dict, shard_size: int, variants: Sequence[str], keys: list[str]) -> dict:
    return {"format_version": CACHE_FORMAT_VERSION, "provenance": provenance, "shard_size": shard_size,
            "variants": list(variants), "keys": keys}


def _plan_differences(old: dict, new: dict) -> list[str]:
    """What differs between the build recorded in a folder and the one asked for, in words (empty: the same)."""
    diffs = [f"{k} {old['provenance'].get(k)!r} (cache) vs {v!r} (now)" for k, v in sorted(new["provenance"].items())
             if old["provenance"].get(k) != v]
    if old["shard_size"] != new["shard_size"]:
        diffs.append(f"shard size {old['shard_size']} (cache) vs {new['shard_size']} (now)")
    if set(old["variants"]) != set(new["variants"]):
        diffs.append(f"variants {'+'.join(old['variants']) or 'none'} (cache) vs {'+'.join(new['variants'])} (now; "
                     f"hflip = --hflip)")
    gone, added = set(old["keys"]) - set(new["keys"]), set(new["keys"]) - set(old["keys"])
    if gone:
        diffs.append(f"{len(gone)} cached images are not in this image list ({_examples(gone)})")
    if added:
        diffs.append(f"{len(added)} images are not in the cache ({_examples(added)})")
    if not (gone or added) and old["keys"] != new["keys"]:
        diffs.append("the images are listed in another order")
    return diffs


def read_shard_entries(path: Path) -> list[dict]:
    """A shard's entries from its safetensors header (index, key, variant, original/input size, image sha1)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return json.loads((handle.metadata() or {})[SHARD_METADATA_KEY])
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise WpsSamError(f"cannot read cache shard {path} ({type(exc).__name__}: {exc}); delete it and rerun "
                          f"`wps-sam cache` to encode it again") from None


class _Folder:
    """Rank 0's view of the cache folder: what it records, what is finished, the image hashes recorded."""

    def __init__(self, root: Path, wanted: dict, plan: list[tuple[str, str]]) -> None:
        self.root, self.wanted, self.plan = root, wanted, plan
        self.num_shards = math.ceil(len(plan) / wanted["shard_size"])

    def inspect(self) -> tuple[list[int], dict[str, str], bool]:
        """(finished shards, image sha1s recorded for them, complete); refuses a folder holding another build."""
        manifest, build = self.root / "manifest.json", self.root / BUILD_FILE
        if manifest.exists():
            cache = EmbeddingCache(self.root)
            cache.refuse_old_format()
            if not cache.complete:
                raise WpsSamError(f"{self.root} holds an unfinished cache written by an older wps-sam (manifest.json "
                                  f"lists {len(cache.finished)} finished shards); delete the folder and rerun "
                                  f"`wps-sam cache`")
            old = _record(cache.provenance, cache.shard_size, cache.variants,
                          list(dict.fromkeys(e.key for e in cache.entries)))
            self._refuse_other(old)
            return list(range(self.num_shards)), cache.image_hashes, True
        if build.exists():
            try:
                old = json.loads(build.read_text())
                old = _record(old["provenance"], int(old["shard_size"]), old["variants"], list(old["keys"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise WpsSamError(f"corrupt cache build record {build}: {exc}; delete the folder and rerun") from None
            self._refuse_other(old)
        elif any(self.root.glob("shard_*.safetensors")):
            raise WpsSamError(f"{self.root} holds cache shards but neither manifest.json nor {BUILD_FILE}, so nothing "
                              f"says what they are; use an empty folder or delete it")
        finished = [s for s in range(self.num_shards) if (self.root / shard_name(s)).is_file()]
        hashes: dict[str, str] = {}
        for shard in finished:
            hashes.update((e["key"], e["sha1"]) for e in self._checked_entries(shard))
        return finished, hashes, False

    def _refuse_other(self, old: dict) -> None:
        diffs = _plan_differences(old, self.wanted)
        if diffs:
            raise WpsSamError(f"{self.root} holds another cache: {'; '.join(diffs)}; use an empty folder or delete it")

    def _checked_entries(self, shard: int) -> list[dict]:
        path, size = self.root / shard_name(shard), self.wanted["shard_size"]
        entries = read_shard_entries(path)
        expected = [[i, *self.plan[i]] for i in range(shard * size, min(len(self.plan), (shard + 1) * size))]
        got = [[e.get("index"), e.get("key"), e.get("variant")] for e in entries]
        if got != expected:
            raise WpsSamError(f"cache shard {path} holds other entries than this build's shard {shard} "
                              f"(first: {got[:1]}, expected {expected[:1]}); delete it and rerun `wps-sam cache`")
        return entries

    def start(self) -> None:
        """Before any rank writes: the build record (kept when resuming), no half-written files of a killed run."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / BUILD_FILE).exists():
            atomic_write_text(self.root / BUILD_FILE, json.dumps(self.wanted, indent=1))
        for stale in self.root.glob(".*.tmp"):  # left by a killed build (atomic_path cleans up on errors, not SIGKILL)
            stale.unlink()

    def finish(self) -> None:
        """Every shard is there: the manifest from their headers (atomically), then the build record goes."""
        missing = [shard_name(s) for s in range(self.num_shards) if not (self.root / shard_name(s)).is_file()]
        if missing:  # every rank said it wrote them: rank 0 does not see the others' files
            raise WpsSamError(f"{len(missing)} of {self.num_shards} shards written by the processes are not in "
                              f"{self.root} (e.g. {missing[0]}); with several nodes --out must be on a filesystem "
                              f"every node shares")
        entries, images = [], {}
        for shard in range(self.num_shards):
            for e in self._checked_entries(shard):
                entries.append({"key": e["key"], "variant": e["variant"], "shard": shard,
                                "original_size": e["original_size"], "input_size": e["input_size"]})
                images.setdefault(e["key"], e["sha1"])
        atomic_write_text(self.root / "manifest.json", json.dumps({
            "format_version": CACHE_FORMAT_VERSION, "provenance": self.wanted["provenance"],
            "shard_size": self.wanted["shard_size"], "finished_shards": list(range(self.num_shards)),
            "images": images, "entries": entries}, indent=1))
        (self.root / BUILD_FILE).unlink(missing_ok=True)


def _encode_shard(root: Path, shard: int, plan: list[tuple[str, str]], sources: dict[str, ImageSource], sam: Sam,
                  shard_size: int, batch_size: int) -> int:
    """Encode one shard and write it atomically (tensor name = entry index; entries in the header)."""
    from safetensors.torch import save_file

    from ..image_io import read_image_rgb

    transform = SamTransform(sam.image_encoder.img_size)
    device = next(sam.image_encoder.parameters()).device
    indices = list(range(shard * shard_size, min(len(plan), (shard + 1) * shard_size)))
    tensors: dict[str, torch.Tensor] = {}
    entries: list[dict] = []
    for start in range(0, len(indices), batch_size):
        chunk, resized = indices[start: start + batch_size], []
        for i in chunk:
            key, variant = plan[i]
            source = sources[key]
            rgb = source() if callable(source) else read_image_rgb(source)
            if variant == "hflip":
                rgb = np.ascontiguousarray(rgb[:, ::-1])
            tensor, geometry = transform.resize_image(rgb)
            entries.append({"index": i, "key": key, "variant": variant,
                            "original_size": list(geometry.original_size), "input_size": list(geometry.input_size),
                            "sha1": NO_HASH if callable(source) else image_sha1(source)})
            resized.append(tensor)
        with torch.inference_mode():
            embeddings = sam.image_encoder(normalize_and_pad(sam, resized).to(device))
        for i, emb in zip(chunk, embeddings):
            tensors[str(i)] = emb.half().cpu().contiguous()
    with atomic_path(root / shard_name(shard)) as tmp:
        save_file(tensors, str(tmp), metadata={SHARD_METADATA_KEY: json.dumps(entries)})
    return len(indices)


def _changed_images(ranks: Ranks, recorded: dict[str, str], sources: dict[str, ImageSource]) -> list[str]:
    """Keys whose image bytes are not those recorded; the hashing is shared out over the ranks."""
    keys = sorted(k for k in recorded if k in sources)
    mine = [k for k in keys[ranks.rank::ranks.world]
            if recorded[k] != (NO_HASH if callable(sources[k]) else image_sha1(sources[k]))]
    return sorted(k for part in ranks.gather(mine) for k in part)


def _refuse_other_encoders(ranks: Ranks, provenance: dict) -> None:
    """Every rank must encode with the same weights and preprocessing (a node may read another checkpoint file)."""
    zero, *others = ranks.gather(provenance)  # the same list on every rank: all of them stop, or none
    for rank, other in enumerate(others, start=1):
        diff = sorted(k for k in zero if other.get(k) != zero[k])
        if diff:
            ranks.fail(f"the processes do not run the same SAM encoder: rank {rank} has {diff[0]} {other[diff[0]]!r}, "
                       f"rank 0 {zero[diff[0]]!r}; every node must read the same --sam-checkpoint")


def build_cache(
    root: str | Path,
    sam: Sam,
    provenance: CacheProvenance,
    items: Sequence[tuple[str, ImageSource]],
    variants: Sequence[str] = ("orig",),
    shard_size: int = 64,
    batch_size: int = 4,
    progress: bool = True,
    fabric=None,
) -> EmbeddingCache:
    """Encode `items` (key, image file or loader) with `sam`'s image encoder into a cache at `root`, resuming a
    killed build; with a launched `fabric`, every rank calls this and encodes its share of the shards. Image files
    are hashed (sha1 of their bytes) into the manifest, so a cache is only ever used for the same images; images
    from loaders get no hash and cannot be checked later (a warning says so). A folder holding another cache
    (other weights, preprocessing, shard size, variants or images) is refused, naming the differences."""
    from tqdm import tqdm

    check_build_args(variants, shard_size, batch_size)
    ranks, root = Ranks(fabric), Path(root)
    plan = [(key, variant) for key, _ in items for variant in variants]
    sources = dict(items)
    folder = _Folder(root, _record(provenance.to_json(), shard_size, variants, list(dict.fromkeys(sources))), plan)

    _refuse_other_encoders(ranks, folder.wanted["provenance"])
    finished, recorded, complete = ranks.on_zero(folder.inspect)
    changed = _changed_images(ranks, recorded, sources)
    if changed:
        ranks.fail(f"{root} holds another cache: {len(changed)} images have the cached names but other content "
                   f"({_examples(changed)}); use an empty folder or delete it")
    if complete:
        ranks.on_zero(lambda: (root / BUILD_FILE).unlink(missing_ok=True))  # a kill after the manifest's write
        return EmbeddingCache(root)
    ranks.on_zero(folder.start)
    done = set(finished)
    todo = [s for s in range(folder.num_shards) if s not in done]
    if finished:
        log.info("resuming cache %s: %d of %d shards already done", root, len(finished), folder.num_shards)
    log.info("caching %d entries in %d shards on %d process(es)", len(plan), folder.num_shards, ranks.world)
    bar = tqdm(total=len(plan), initial=sum(1 for i in range(len(plan)) if i // shard_size in done),
               disable=not (progress and ranks.is_zero), desc="caching embeddings", unit="img")
    for first in range(0, len(todo), ranks.world):  # one round: a shard per rank
        mine = todo[first: first + ranks.world][ranks.rank: ranks.rank + 1]
        error, count = None, 0
        for shard in mine:
            try:
                count = _encode_shard(root, shard, plan, sources, sam, shard_size, batch_size)
            except WpsSamError as exc:
                error = f"rank {ranks.rank}: {exc}" if ranks.world > 1 else str(exc)
            except Exception as exc:  # noqa: BLE001 - any failure must reach the other ranks, not hang them
                if ranks.world == 1:
                    raise
                log.exception("rank %d: shard %d failed", ranks.rank, shard)
                first_line = (str(exc).splitlines() or [""])[0]
                error = f"rank {ranks.rank}: shard {shard}: {type(exc).__name__}: {first_line}"
        outcomes = ranks.gather((error, count))
        ranks.fail_on_any([e for e, _ in outcomes])
        bar.update(sum(c for _, c in outcomes))
    bar.close()
    ranks.on_zero(folder.finish)
    return EmbeddingCache(root)
