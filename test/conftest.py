"""Shared fixtures: tiny official-architecture SAMs and prompters with fixed random weights."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest
import torch

from wps_sam_core.checkpoint import PrompterCheckpoint, save_prompter_checkpoint
from wps_sam_core.modeling.prompter import PrompterConfig
from wps_sam_core.modeling.sam import get_sam_config, load_sam
from wps_sam_core.modeling.wpssam import WPSSAM

TEST_CLASSES = ["mug_body", "mug_handle", "car_wheel"]


def tiny_prompter_config(num_classes: int = len(TEST_CLASSES)) -> PrompterConfig:
    return PrompterConfig(
        num_classes=num_classes, num_queries=8, hidden_dim=64, num_heads=4, enc_layers=1, dec_layers=2,
        dim_feedforward=128, dropout=0.0, prompt_dim=get_sam_config("tiny").prompt_embed_dim,
    )


def make_tiny_model(seed: int = 0, force_parts: bool = True) -> WPSSAM:
    """A tiny WPSSAM with seeded random weights; `force_parts` makes every query a part (not no-object)."""
    torch.manual_seed(seed)
    model = WPSSAM.create(load_sam("tiny"), tiny_prompter_config())
    if force_parts:
        with torch.no_grad():
            model.prompter.class_head.bias[-1] = -20.0
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model() -> WPSSAM:
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory, tiny_model):
    """The tiny model saved as files: (SAM .safetensors in official key layout, prompter checkpoint)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("tiny_model")
    sam_path = root / "tiny_sam.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.sam.state_dict().items()}, str(sam_path))
    ckpt = PrompterCheckpoint(
        config=tiny_model.prompter.cfg, class_names=list(TEST_CLASSES), sam_type="tiny", image_size=256,
        state_dict=tiny_model.prompter.state_dict(),
    )
    prompter_path = save_prompter_checkpoint(root / "prompter.safetensors", ckpt)
    return sam_path, prompter_path


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    img[h // 4: h // 2, w // 5: w // 2] = (200, 40, 40)  # some structure so masks are not pure noise
    return img


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A small procedural part world (COCO layout): 12 train + 4 val images at 128 px."""
    from wps_sam_core.data.world import write_world

    root = tmp_path_factory.mktemp("world")
    write_world(root, 12, 0, 128, "train")
    write_world(root, 4, 1, 128, "val")
    return root


TINY_PROMPTER_YAML = {"num_queries": 8, "hidden_dim": 64, "num_heads": 4, "enc_layers": 1, "dec_layers": 2,
                      "dim_feedforward": 128, "dropout": 0.1}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two OpenMP threads on a shared 2-core box spin-wait 5-15x slower; one measures our code."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def wait_until(predicate: Callable[[], Any], timeout: float, every: Callable[[], Any] | None = None,
               step: float = 0.02) -> bool:
    """Poll until `predicate()` holds (True) or `timeout` s pass (False; one last look at the deadline),
    calling `every()` before each look (e.g. to take the samples that arrived): tests wait for conditions,
    never for fixed sleeps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if every is not None:
            every()
        if predicate():
            return True
        time.sleep(step)
    if every is not None:
        every()
    return bool(predicate())


def load_module_from(path: Path, name: str) -> ModuleType:
    """A script or launch file that is not on the import path (training/*.py, launch/*.launch.py), as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
