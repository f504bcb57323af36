"""Prompter checkpoint format: round trip, content hash, compatibility checks, atomic writes."""
from __future__ import annotations

import pytest
import torch

from wps_sam_core.checkpoint import PrompterCheckpoint, load_prompter_checkpoint, save_prompter_checkpoint
from wps_sam_core.errors import WpsSamError
from wps_sam_core.segmenter import PartSegmenter

from conftest import TEST_CLASSES, random_image


def test_round_trip_stores_only_prompter_weights(tiny_files, tiny_model):
    _, prompter_path = tiny_files
    ckpt = load_prompter_checkpoint(prompter_path)
    assert ckpt.class_names == TEST_CLASSES and ckpt.sam_type == "tiny" and ckpt.image_size == 256
    assert ckpt.config == tiny_model.prompter.cfg
    assert not any(k.startswith(("image_encoder", "mask_decoder", "prompt_encoder")) for k in ckpt.state_dict)
    reference = tiny_model.prompter.state_dict()
    assert all(torch.equal(ckpt.state_dict[k], reference[k]) for k in reference)


def test_segmenter_from_files_equals_in_memory_model(tiny_files, tiny_model):
    sam_path, prompter_path = tiny_files
    from_files = PartSegmenter.from_checkpoints(prompter_path, "tiny", sam_path, device="cpu")
    in_memory = PartSegmenter(tiny_model, TEST_CLASSES, device="cpu")
    image = random_image(100, 140, 4)
    import numpy as np
    assert np.array_equal(from_files.segment(image).labels, in_memory.segment(image).labels)


def test_tampered_weights_fail_the_hash(tiny_files, tmp_path):
    _, prompter_path = tiny_files
    data = bytearray(prompter_path.read_bytes())
    data[-5] ^= 0xFF
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(WpsSamError, match="content hash mismatch"):
        load_prompter_checkpoint(bad)


def test_truncated_checkpoint(tiny_files, tmp_path):
    _, prompter_path = tiny_files
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(prompter_path.read_bytes()[:1000])
    with pytest.raises(WpsSamError, match="corrupt or truncated"):
        load_prompter_checkpoint(bad)


def test_other_sam_type_is_refused(tiny_files):
    _, prompter_path = tiny_files
    with pytest.raises(WpsSamError, match="trained on SAM type 'tiny', not 'vit_b'"):
        PartSegmenter.from_checkpoints(prompter_path, sam_type="vit_b", device="cpu")


def test_other_class_count_is_refused(tiny_files):
    ckpt = load_prompter_checkpoint(tiny_files[1])
    with pytest.raises(WpsSamError, match="3 part classes, 40 were expected"):
        ckpt.check_compatible("tiny", 256, num_classes=40)


def test_atomic_save_leaves_no_partial_file(tiny_model, tmp_path, monkeypatch):
    import safetensors.torch

    ckpt = PrompterCheckpoint(tiny_model.prompter.cfg, TEST_CLASSES, "tiny", 256, tiny_model.prompter.state_dict())
    target = tmp_path / "p.safetensors"
    save_prompter_checkpoint(target, ckpt)
    before = target.read_bytes()

    def crash(*args, **kwargs):
        open(args[1], "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_prompter_checkpoint(target, ckpt)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"]


def test_one_factory_picks_the_model_and_describes_it_in_construction(tiny_files):
    from wps_sam_core.segmenter import load_segmenter

    sam_path, prompter_path = tiny_files
    seg = load_segmenter(str(prompter_path), "", str(sam_path), "cpu")
    assert seg.sam_type == "tiny"  # the prompter's, kept on the segmenter (wps-sam export reads it)
    assert seg.description == f"prompter {prompter_path} on SAM tiny ({sam_path})" and seg.caveat == ""
    unnamed = load_segmenter(str(prompter_path), None, "random", "cpu")  # random SAM weights: asked for by name
    assert unnamed.description.endswith("(random weights)")


@pytest.mark.parametrize("sam", [{"sam_checkpoint": "sam.pth"}, {"sam_type": "vit_b"}])
def test_a_sam_without_a_prompter_is_refused(sam):
    from wps_sam_core.segmenter import load_segmenter

    with pytest.raises(WpsSamError, match="needs a prompter checkpoint.*embedded default model brings its own SAM"):
        load_segmenter(None, device="cpu", **sam)


def test_weights_hash_takes_0_dim_tensors_and_keeps_other_hashes():
    """TinyViT (vit_t) has 0-dim BatchNorm counters: hashing its encoder (cache provenance) must work; tensors of
    any other shape hash exactly as before (bytes of the flattened tensor)."""
    import hashlib

    import torch

    from wps_sam_core.checkpoint import tensors_sha256
    from wps_sam_core.modeling.sam import build_sam

    encoder = build_sam("vit_t").image_encoder.state_dict()
    assert any(t.dim() == 0 for t in encoder.values())
    assert len(tensors_sha256(encoder)) == 64
    assert tensors_sha256({"n": torch.tensor(3)}) != tensors_sha256({"n": torch.tensor(4)})
    weight = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    expected = hashlib.sha256(b"w|torch.float32|(3, 4)|" + weight.numpy().tobytes()).hexdigest()
    assert tensors_sha256({"w": weight}) == expected
