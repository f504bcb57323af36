"""The light encoder: MobileSAM's TinyViT `vit_t` behind the official SAM interface."""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from wps_sam_core.checkpoint import PrompterCheckpoint, save_prompter_checkpoint
from wps_sam_core.errors import WpsSamError
from wps_sam_core.modeling.prompter import PrompterConfig
from wps_sam_core.modeling.sam import SAM_CONFIGS, build_sam, guess_sam_type, load_sam
from wps_sam_core.modeling.wpssam import WPSSAM
from wps_sam_core.preprocess import normalize_and_pad
from wps_sam_core.segmenter import PartSegmenter, SegmenterSettings

from conftest import TEST_CLASSES, random_image

pytest.importorskip("mobile_sam", reason="vit_t needs the `light` extra (mobilesam-mirror, timm)")


@pytest.fixture(scope="module")
def official_vit_t(tmp_path_factory):
    """A full-size random MobileSAM built by mobile_sam's own builder, saved in its layout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mobile_sam import build_sam_vit_t

    torch.manual_seed(0)
    official = build_sam_vit_t().eval()
    with torch.no_grad():  # make the attention biases non-trivial so a stale bias cache would show
        for name, param in official.named_parameters():
            if name.endswith("attention_biases"):
                param.normal_()
    official.eval()  # recompute TinyViT's cached attention biases from the new values
    path = tmp_path_factory.mktemp("vit_t") / "mobile_sam.pt"
    torch.save(official.state_dict(), path)
    return official, path


@pytest.fixture(scope="module")
def ours(official_vit_t):
    return load_sam("vit_t", official_vit_t[1])


def test_registry_entry_matches_mobile_sam_hyper_parameters():
    from wps_sam_core.modeling import sam_vit_t

    cfg = SAM_CONFIGS["vit_t"]
    assert cfg.encoder == "tiny_vit" and cfg.image_size == 1024 and cfg.embedding_size == 64
    assert cfg.prompt_embed_dim == 256 and cfg.decoder_mlp_dim == 2048 and cfg.mask_in_chans == 16
    assert cfg.encoder_embed_dim == sam_vit_t.TINY_VIT_EMBED_DIMS[-1]
    assert cfg.encoder_depth == sum(sam_vit_t.TINY_VIT_DEPTHS)
    assert cfg.encoder_num_heads == sam_vit_t.TINY_VIT_NUM_HEADS[-1]


def test_full_size_state_dict_in_mobile_sam_layout_loads_strictly(official_vit_t, ours):
    official, _ = official_vit_t
    reference = official.state_dict()
    loaded = ours.state_dict()
    assert set(loaded) == set(reference) and len(reference) > 400
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    assert guess_sam_type(reference) == "vit_t"
    assert not any(p.requires_grad for p in ours.parameters()) and not ours.training


def test_embedding_is_256x64x64_and_equals_mobile_sam(official_vit_t, ours):
    official, _ = official_vit_t
    torch.manual_seed(1)
    model = WPSSAM.create(ours, PrompterConfig(num_classes=len(TEST_CLASSES), num_queries=6, hidden_dim=64,
                                               num_heads=4, enc_layers=1, dec_layers=1, dim_feedforward=64))
    seg = PartSegmenter(model, TEST_CLASSES, device="cpu", settings=SegmenterSettings(score_threshold=0.0))
    image = random_image(480, 640, seed=4)
    embeddings, geometries = seg.embed([image])
    assert embeddings.shape == (1, 256, 64, 64)
    assert geometries[0].input_size == (768, 1024)
    resized, _ = seg.transform.resize_image(image)
    with torch.inference_mode():
        expected = official.image_encoder(normalize_and_pad(official, [resized]))
    assert torch.allclose(embeddings, expected, atol=1e-5)
    result = seg.segment_embeddings(embeddings, geometries)[0]
    assert result.labels.shape == (480, 640) and result.instance_ids.dtype == np.uint16


def test_vit_t_checkpoint_loaded_as_vit_b_names_the_type_it_fits(official_vit_t):
    with pytest.raises(WpsSamError, match=r"does not fit SAM type 'vit_b'.*fit SAM type 'vit_t'"):
        load_sam("vit_b", official_vit_t[1])


@pytest.mark.parametrize("trained_on, used_with", [("vit_b", "vit_t"), ("vit_t", "vit_b")])
def test_prompter_trained_on_one_encoder_refuses_another(tmp_path, trained_on, used_with):
    cfg = PrompterConfig(num_classes=len(TEST_CLASSES), num_queries=4, hidden_dim=32, num_heads=2, enc_layers=1,
                         dec_layers=1, dim_feedforward=32)
    from wps_sam_core.modeling.prompter import Prompter

    ckpt = PrompterCheckpoint(config=cfg, class_names=list(TEST_CLASSES), sam_type=trained_on, image_size=1024,
                              state_dict=Prompter(cfg, 64).state_dict())
    path = save_prompter_checkpoint(tmp_path / "p.safetensors", ckpt)
    with pytest.raises(WpsSamError, match=rf"trained on SAM type '{trained_on}', not '{used_with}'"):
        PartSegmenter.from_checkpoints(path, sam_type=used_with, device="cpu")


def test_missing_package_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mobile_sam.modeling", None)  # what an absent package looks like to import
    with pytest.raises(WpsSamError, match=r"vit_t.*pip install mobilesam-mirror timm"):
        build_sam("vit_t")
