"""Embedding cache: equals the encoder, refuses stale/incomplete caches, survives SIGKILL mid-build."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from wps_sam_core.distill.cache import EmbeddingCache, build_cache, provenance_for, shard_name
from wps_sam_core.errors import WpsSamError
from wps_sam_core.preprocess import SamTransform, normalize_and_pad

from conftest import make_tiny_model, random_image


def items(n):
    return [(f"img{i}.png", (lambda i=i: random_image(60 + 10 * i, 90, seed=i))) for i in range(n)]


def test_cache_holds_the_encoder_output_and_flips(tmp_path, tiny_model):
    prov = provenance_for(tiny_model.sam, "tiny")
    cache = build_cache(tmp_path / "c", tiny_model.sam, prov, items(3), variants=("orig", "hflip"), shard_size=2, progress=False)
    assert cache.complete and len(cache.entries) == 6
    transform = SamTransform(tiny_model.image_size)
    for key, load in items(3):
        for variant, image in (("orig", load()), ("hflip", load()[:, ::-1].copy())):
            expected = tiny_model.encode(normalize_and_pad(tiny_model.sam, [transform.resize_image(image)[0]]))[0]
            got, entry = cache.get(key, variant)
            assert torch.allclose(got, expected, atol=2e-2, rtol=1e-2)  # stored as fp16
            assert entry.original_size == image.shape[:2]


def test_stale_and_incomplete_caches_are_refused(tmp_path, tiny_model):
    prov = provenance_for(tiny_model.sam, "tiny")
    cache = build_cache(tmp_path / "c", tiny_model.sam, prov, items(2), progress=False)
    other = provenance_for(make_tiny_model(seed=5).sam, "tiny")
    with pytest.raises(WpsSamError, match="stale embedding cache.*sam_weights_sha256"):
        cache.check(other)
    with pytest.raises(WpsSamError, match="lacks 1 images"):
        cache.check(prov, ["img0.png", "img9.png"])
    with pytest.raises(WpsSamError, match="other weights, preprocessing or images"):
        build_cache(tmp_path / "c", make_tiny_model(seed=5).sam, other, items(2), progress=False)
    (tmp_path / "c" / shard_name(0)).unlink()
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    manifest["finished_shards"] = []
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WpsSamError, match="incomplete"):
        EmbeddingCache(tmp_path / "c").check(prov)


def test_sigkill_mid_build_then_rerun_redoes_nothing_finished(tmp_path, small_world, tiny_files):
    sam_path, _ = tiny_files
    args = [sys.executable, "-m", "wps_sam_core.cli", "cache", "--data", str(small_world), "--split", "train",
            "--sam-type", "tiny", "--sam-checkpoint", str(sam_path), "--shard-size", "2", "--batch-size", "1",
            "--device", "cpu"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = killed / "manifest.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and len(json.loads(manifest.read_text())["finished_shards"]) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = json.loads(manifest.read_text())["finished_shards"]
    assert 0 < len(finished) < 6, "killed mid-way"
    stamps = {s: (killed / shard_name(s)).stat().st_mtime_ns for s in finished}

    assert subprocess.run(args + ["--out", str(killed)], capture_output=True).returncode == 0
    assert {s: (killed / shard_name(s)).stat().st_mtime_ns for s in finished} == stamps  # not redone
    assert subprocess.run(args + ["--out", str(tmp_path / "clean")], capture_output=True).returncode == 0
    a, b = EmbeddingCache(killed), EmbeddingCache(tmp_path / "clean")
    assert a.complete and [e.key for e in a.entries] == [e.key for e in b.entries]
    for entry in b.entries:
        assert torch.equal(a.get(entry.key)[0], b.get(entry.key)[0])
    assert not list(killed.glob("*.tmp"))
