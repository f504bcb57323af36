"""Shared helpers of the benchmark scripts: timing statistics, machine load, one JSON line."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "test"))  # node_process.py: the node as a child process, shared with the tests


def stats(samples: list[float]) -> dict:
    return {"min": round(min(samples), 4), "median": round(statistics.median(samples), 4), "n": len(samples)}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def set_threads(threads: int) -> int:
    """Pin torch's intra-op threads. On a shared 2-core box, OpenMP spin-waits of 2 threads that lose their
    core to a neighbour make small ops 5-15x slower, so the default of 1 measures our code, not the neighbours."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine() -> dict:
    return {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def emit(payload: dict) -> None:
    """The one JSON line a benchmark prints (load at the end is added: the machine is shared)."""
    payload["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(payload, separators=(",", ":")), flush=True)


def tiny_model_files(root: Path) -> tuple[Path, Path]:
    """A seeded tiny SAM + prompter (every query a part) saved as the node's checkpoint files."""
    from safetensors.torch import save_file

    from wps_sam_core.checkpoint import PrompterCheckpoint, save_prompter_checkpoint
    from wps_sam_core.modeling.wpssam import WPSSAM
    from wps_sam_core.modeling.prompter import PrompterConfig
    from wps_sam_core.modeling.sam import get_sam_config, load_sam

    torch.manual_seed(0)
    cfg = PrompterConfig(num_classes=3, num_queries=8, hidden_dim=64, num_heads=4, enc_layers=1, dec_layers=2,
                         dim_feedforward=128, dropout=0.0, prompt_dim=get_sam_config("tiny").prompt_embed_dim)
    model = WPSSAM.create(load_sam("tiny"), cfg)
    with torch.no_grad():
        model.prompter.class_head.bias[-1] = -20.0
    sam_path = root / "tiny_sam.safetensors"
    save_file({k: v.contiguous() for k, v in model.sam.state_dict().items()}, str(sam_path))
    ckpt = PrompterCheckpoint(config=cfg, class_names=["body", "handle", "wheel"], sam_type="tiny", image_size=256,
                              state_dict=model.prompter.state_dict())
    return sam_path, save_prompter_checkpoint(root / "prompter.safetensors", ckpt)
