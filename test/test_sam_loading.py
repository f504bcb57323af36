"""SAM registry and strict, safe checkpoint loading against the official segment_anything builders."""
from __future__ import annotations

import pytest
import torch
from segment_anything import sam_model_registry

from wps_sam_core.errors import WpsSamError
from wps_sam_core.modeling.sam import build_sam, guess_sam_type, load_sam, load_state_strict, read_state_dict


@pytest.fixture(scope="module")
def official_vit_b_checkpoint(tmp_path_factory):
    """A full-size vit_b with random weights, saved like the official `sam_vit_b_01ec64.pth`."""
    torch.manual_seed(1)
    sam = sam_model_registry["vit_b"]()
    path = tmp_path_factory.mktemp("ckpt") / "sam_vit_b_01ec64.pth"
    torch.save(sam.state_dict(), path)
    return path, sam.state_dict()


def test_full_size_vit_b_loads_strictly_with_equal_weights(official_vit_b_checkpoint):
    path, reference = official_vit_b_checkpoint
    sam = load_sam("vit_b", path)
    loaded = sam.state_dict()
    assert set(loaded) == set(reference)
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    assert not any(p.requires_grad for p in sam.parameters())
    assert not sam.training and not sam.image_encoder.training


@pytest.mark.parametrize("sam_type", ["vit_b", "vit_l", "vit_h"])
def test_registry_matches_official_layout(sam_type):
    with torch.device("meta"):
        ours, official = build_sam(sam_type).state_dict(), sam_model_registry[sam_type]().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in official.items()}
    assert guess_sam_type(official) == sam_type


def test_deleted_key_is_named(official_vit_b_checkpoint, tmp_path):
    _, state = official_vit_b_checkpoint
    broken = dict(state)
    del broken["mask_decoder.iou_token.weight"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(WpsSamError, match=r"missing keys: mask_decoder\.iou_token\.weight"):
        load_sam("vit_b", tmp_path / "broken.pth")


def test_extra_key_is_named(official_vit_b_checkpoint, tmp_path):
    _, state = official_vit_b_checkpoint
    extra = dict(state)
    extra["image_encoder.surprise"] = torch.zeros(3)
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(WpsSamError, match=r"unexpected keys: image_encoder\.surprise"):
        load_sam("vit_b", tmp_path / "extra.pth")


def test_checkpoint_of_other_type_names_the_type_it_fits(official_vit_b_checkpoint):
    _, state = official_vit_b_checkpoint
    with torch.device("meta"):
        vit_l = build_sam("vit_l")
    with pytest.raises(WpsSamError, match=r"does not fit SAM type 'vit_l'.*fit SAM type 'vit_b'"):
        load_state_strict(vit_l, state, "vit_l", "sam_vit_b_01ec64.pth")


class _Payload:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/wps_sam_pwned_marker",))


def test_pickle_with_code_is_refused(tmp_path):
    import os

    marker = "/tmp/wps_sam_pwned_marker"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.x": torch.zeros(1), "evil": _Payload()}, path)
    with pytest.raises(WpsSamError, match="refusing to load"):
        read_state_dict(path)
    assert not os.path.exists(marker)


def test_truncated_and_empty_checkpoints(tmp_path, official_vit_b_checkpoint):
    path, _ = official_vit_b_checkpoint
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(WpsSamError, match="corrupt or truncated"):
        read_state_dict(truncated)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WpsSamError, match="empty"):
        read_state_dict(empty)
    with pytest.raises(WpsSamError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")


def test_unknown_sam_type():
    with pytest.raises(WpsSamError, match="unknown SAM type 'vit_x'"):
        build_sam("vit_x")
