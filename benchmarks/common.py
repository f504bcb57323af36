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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


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
