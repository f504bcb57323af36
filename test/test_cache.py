"""Embedding cache: equals the encoder, refuses stale/incomplete caches and folders holding something else.
(Several processes, SIGKILL mid-build and resume: test_cache_ranks.py.)"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from wps_sam_core.cli import main
from wps_sam_core.distill.cache import BUILD_FILE, EmbeddingCache, build_cache, image_sha1, provenance_for, shard_name
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
    with pytest.raises(WpsSamError, match="holds another cache: sam_weights_sha256 '[0-9a-f]+' .cache. vs '[0-9a-f]+' .now.;"):
        build_cache(tmp_path / "c", make_tiny_model(seed=5).sam, other, items(2), progress=False)
    (tmp_path / "c" / shard_name(0)).unlink()
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    manifest["finished_shards"] = []
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WpsSamError, match="incomplete"):
        EmbeddingCache(tmp_path / "c").check(prov)


def world_files(root, seed, n=4):
    """(file name, path) of a procedural world's train images; every seed uses the same file names."""
    from wps_sam_core.data.world import write_world

    write_world(root, n, seed, 64, "train")
    return [(p.name, p) for p in sorted((root / "images" / "train").iterdir())]


def test_same_file_names_with_other_pixels_are_refused(tmp_path, tiny_model):
    prov = provenance_for(tiny_model.sam, "tiny")
    seed1, seed9 = world_files(tmp_path / "world1", 1), world_files(tmp_path / "world9", 9)
    assert [k for k, _ in seed1] == [k for k, _ in seed9]  # same names, other images
    cache = build_cache(tmp_path / "c", tiny_model.sam, prov, seed1, shard_size=2, progress=False)
    assert cache.image_hashes == {k: image_sha1(p) for k, p in seed1}
    cache.check(prov, dict(seed1))  # its own images: fine
    with pytest.raises(WpsSamError, match=r"was built from other images: 4 of 4 image files have the cached names "
                                          r"but other content, e\.g\. 000000\.png, 000001\.png, 000002\.png, \.\.\.;"):
        cache.check(prov, dict(seed9))
    manifest = (tmp_path / "c" / "manifest.json").read_bytes()
    with pytest.raises(WpsSamError, match="holds another cache: 4 images have the cached names but other content"):
        build_cache(tmp_path / "c", tiny_model.sam, prov, seed9, shard_size=2, progress=False)
    assert (tmp_path / "c" / "manifest.json").read_bytes() == manifest  # refused before touching anything
    one_changed = [seed1[0], *seed9[1:2], *seed1[2:]]
    with pytest.raises(WpsSamError, match="1 of 4 image files .* e.g. 000001.png;"):
        cache.check(prov, dict(one_changed))


def test_rerun_with_other_settings_names_the_difference(tmp_path, tiny_model):
    prov = provenance_for(tiny_model.sam, "tiny")
    files = world_files(tmp_path / "world", 1, n=3)
    build_cache(tmp_path / "c", tiny_model.sam, prov, files, variants=("orig", "hflip"), shard_size=2, progress=False)
    with pytest.raises(WpsSamError, match=r"holds another cache: shard size 2 \(cache\) vs 64 \(now\); use an empty"):
        build_cache(tmp_path / "c", tiny_model.sam, prov, files, variants=("orig", "hflip"), progress=False)
    with pytest.raises(WpsSamError, match=r"holds another cache: variants orig\+hflip \(cache\) vs orig \(now"):
        build_cache(tmp_path / "c", tiny_model.sam, prov, files, shard_size=2, progress=False)
    with pytest.raises(WpsSamError, match=r"holds another cache: 1 cached images are not in this image list \(000002.png\)"):
        build_cache(tmp_path / "c", tiny_model.sam, prov, files[:2], variants=("orig", "hflip"), shard_size=2,
                    progress=False)
    again = build_cache(tmp_path / "c", tiny_model.sam, prov, files, variants=("orig", "hflip"), shard_size=2,
                        progress=False)
    assert again.complete  # the same build: nothing to do


def test_old_caches_are_refused_and_caches_from_memory_named(tmp_path, tiny_model, caplog):
    prov = provenance_for(tiny_model.sam, "tiny")
    files = world_files(tmp_path / "world", 1, n=2)
    from_memory = build_cache(tmp_path / "m", tiny_model.sam, prov, items(2), progress=False)
    from_memory.check(prov, ["img0.png", "img1.png"])  # names only: as before
    from_memory.check(prov, {"img0.png": files[0][1], "img1.png": files[1][1]})
    assert "2 images were cached from memory, not from files, so their content cannot be checked" in caplog.text

    build_cache(tmp_path / "c", tiny_model.sam, prov, files, progress=False)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())  # as format 1 wrote it
    manifest["format_version"] = manifest["provenance"]["format_version"] = 1
    del manifest["images"]
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    old_format = "has format 1, which records no image content hashes.*rebuild it with `wps-sam cache` into an empty folder"
    with pytest.raises(WpsSamError, match=old_format):
        EmbeddingCache(tmp_path / "c").check(prov, dict(files))
    with pytest.raises(WpsSamError, match=old_format):
        build_cache(tmp_path / "c", tiny_model.sam, prov, files, progress=False)


# ---- `wps-sam cache` -----------------------------------------------------------------------------------------
def test_cli_cache_needs_a_sam_checkpoint(tmp_path, small_world, capsys):
    argv = ["cache", "--data", str(small_world), "--split", "val", "--out", str(tmp_path / "c"), "--sam-type", "tiny",
            "--device", "cpu", "--no-progress"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "wps-sam cache: error: no SAM checkpoint: pass --sam-checkpoint PATH (an official SAM checkpoint), or "
        "--sam-checkpoint random for random weights (tests and smoke runs only)")
    assert not (tmp_path / "c").exists()
    assert main(argv + ["--sam-checkpoint", "random"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is True


def test_cli_cache_of_other_images_with_the_same_names_is_refused(tmp_path, tiny_files, capsys):
    from wps_sam_core.data.world import write_world

    write_world(tmp_path / "world1", 4, 1, 64, "train")
    write_world(tmp_path / "world9", 4, 9, 64, "train")  # the same file names, other pictures

    def cache(world, *extra):
        return main(["cache", "--data", str(tmp_path / world), "--out", str(tmp_path / "c"), "--sam-type", "tiny",
                     "--sam-checkpoint", str(tiny_files[0]), "--device", "cpu", "--no-progress", *extra])

    assert cache("world1", "--shard-size", "2") == 0
    assert json.loads(capsys.readouterr().out)["complete"] is True
    assert cache("world9", "--shard-size", "2") == 2
    out, err = capsys.readouterr()
    assert "complete" not in out
    assert err.strip() == (f"wps-sam cache: error: {tmp_path / 'c'} holds another cache: 4 images have the cached "
                           f"names but other content (000000.png, 000001.png, 000002.png, ...); use an empty folder "
                           f"or delete it")
    assert cache("world1") == 2  # the default --shard-size 64
    assert "holds another cache: shard size 2 (cache) vs 64 (now); use an empty folder" in capsys.readouterr().err
    assert cache("world1", "--shard-size", "2", "--hflip") == 2
    assert "holds another cache: variants orig (cache) vs orig+hflip (now; hflip = --hflip);" in capsys.readouterr().err
    assert cache("world1", "--shard-size", "2") == 0  # the same build: complete, nothing redone
    assert json.loads(capsys.readouterr().out)["complete"] is True


# ---- what a folder may hold while a build is unfinished -----------------------------------------------------
def record(prov) -> dict:
    """build.json of `build_cache(..., items(3), shard_size=1)`."""
    return {"format_version": 2, "provenance": prov.to_json(), "shard_size": 1, "variants": ["orig"],
            "keys": ["img0.png", "img1.png", "img2.png"]}


def test_the_manifest_comes_last_and_a_rerun_finishes_an_unfinished_build(tmp_path, tiny_model):
    prov = provenance_for(tiny_model.sam, "tiny")
    full = build_cache(tmp_path / "full", tiny_model.sam, prov, items(3), shard_size=1, progress=False)
    (tmp_path / "c").mkdir()  # a build killed after its first shard: build.json and shard 0, no manifest
    (tmp_path / "c" / BUILD_FILE).write_text(json.dumps(record(prov)))
    shutil.copy(tmp_path / "full" / shard_name(0), tmp_path / "c")
    with pytest.raises(WpsSamError, match=r"embedding cache \S+ is unfinished \(a build was stopped; no manifest.json "
                                          r"yet\); rerun the same `wps-sam cache` command to finish it"):
        EmbeddingCache(tmp_path / "c")  # what training says: not a cache yet
    done = build_cache(tmp_path / "c", tiny_model.sam, prov, items(3), shard_size=1, progress=False)
    assert done.complete and not (tmp_path / "c" / BUILD_FILE).exists()
    assert (tmp_path / "c" / "manifest.json").read_bytes() == (tmp_path / "full" / "manifest.json").read_bytes()
    assert [e.key for e in done.entries] == [e.key for e in full.entries]


def test_folders_holding_something_else_are_refused(tmp_path, tiny_model):
    prov = provenance_for(tiny_model.sam, "tiny")
    build_cache(tmp_path / "full", tiny_model.sam, prov, items(3), shard_size=1, progress=False)
    manifest = json.loads((tmp_path / "full" / "manifest.json").read_text())

    old = tmp_path / "old"  # a killed build of an older wps-sam: a manifest listing some shards as finished
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({**manifest, "finished_shards": [0]}))
    with pytest.raises(WpsSamError, match=r"^\S+old holds an unfinished cache written by an older wps-sam \(manifest.json "
                                          r"lists 1 finished shards\); delete the folder and rerun `wps-sam cache`$"):
        build_cache(old, tiny_model.sam, prov, items(3), shard_size=1, progress=False)

    stray = tmp_path / "stray"  # shards, but nothing saying what they are
    stray.mkdir()
    (stray / shard_name(0)).write_bytes((tmp_path / "full" / shard_name(0)).read_bytes())
    with pytest.raises(WpsSamError, match="stray holds cache shards but neither manifest.json nor build.json"):
        build_cache(stray, tiny_model.sam, prov, items(3), shard_size=1, progress=False)

    mixed = tmp_path / "mixed"  # this build's record, but shard 1 is another build's shard 0
    mixed.mkdir()
    (mixed / BUILD_FILE).write_text(json.dumps(record(prov)))
    (mixed / shard_name(1)).write_bytes((tmp_path / "full" / shard_name(0)).read_bytes())
    with pytest.raises(WpsSamError, match=r"cache shard \S+shard_00001.safetensors holds other entries than this "
                                          r"build's shard 1 \(first: \[\[0, 'img0.png', 'orig'\]\], expected "
                                          r"\[\[1, 'img1.png', 'orig'\]\]\); delete it and rerun"):
        build_cache(mixed, tiny_model.sam, prov, items(3), shard_size=1, progress=False)
    (mixed / shard_name(1)).write_bytes(b"garbage")
    with pytest.raises(WpsSamError, match=r"cannot read cache shard \S+shard_00001.safetensors \(SafetensorError"):
        build_cache(mixed, tiny_model.sam, prov, items(3), shard_size=1, progress=False)
    (mixed / BUILD_FILE).write_text("{")
    with pytest.raises(WpsSamError, match="corrupt cache build record .*build.json"):
        build_cache(mixed, tiny_model.sam, prov, items(3), shard_size=1, progress=False)
    (mixed / BUILD_FILE).write_text(json.dumps({**record(prov), "shard_size": 2}))
    with pytest.raises(WpsSamError, match=r"mixed holds another cache: shard size 2 \(cache\) vs 1 \(now\)"):
        build_cache(mixed, tiny_model.sam, prov, items(3), shard_size=1, progress=False)
    for folder in (old, stray, mixed):
        assert not (folder / "manifest.json").exists() or folder == old


@pytest.mark.parametrize("flag,value", [("--devices", 0), ("--num-nodes", 0), ("--timeout-min", 0)],
                         ids=["--devices-0", "--num-nodes-0", "--timeout-min-0"])
def test_cli_cache_process_flags_are_checked_before_starting(tmp_path, small_world, flag, value, capsys):
    argv = ["cache", "--data", str(small_world), "--out", str(tmp_path / "c"), "--sam-type", "tiny",
            "--sam-checkpoint", "random", "--accelerator", "cpu", "--no-progress", flag, str(value)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"wps-sam cache: error: {flag} must be > 0, got {value}"
    assert not (tmp_path / "c").exists()


def test_cli_cache_refuses_a_bad_dataset_before_starting_processes(tmp_path, small_world, capsys):
    argv = ["cache", "--data", str(small_world), "--split", "nope", "--out", str(tmp_path / "c"), "--sam-type", "tiny",
            "--sam-checkpoint", "random", "--accelerator", "cpu", "--devices", "2", "--no-progress"]
    assert main(argv) == 2  # in this process: had it started a second one, that one would rerun pytest's argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("wps-sam cache: error: ") and "nope" in err and "\n" not in err
    assert not (tmp_path / "c").exists()


def test_shards_written_where_rank_0_cannot_see_them_are_named(tmp_path, tiny_model):
    """Several nodes with --out on node-local disks: rank 0 finds the others' shards missing when it merges."""
    from wps_sam_core.distill.cache_build import _Folder

    prov = provenance_for(tiny_model.sam, "tiny")
    build_cache(tmp_path / "c", tiny_model.sam, prov, items(3), shard_size=1, progress=False)
    (tmp_path / "c" / shard_name(1)).unlink()  # as if written on another node's disk
    folder = _Folder(tmp_path / "c", record(prov), [(f"img{i}.png", "orig") for i in range(3)])
    with pytest.raises(WpsSamError, match=r"^1 of 3 shards written by the processes are not in \S+ \(e.g. "
                                          r"shard_00001.safetensors\); with several nodes --out must be on a filesystem "
                                          r"every node shares$"):
        folder.finish()
