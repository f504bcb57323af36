"""P4: `wps-sam cache` on 2 processes vs 1 process, on this machine's CPUs -> one JSON line.

The real command (`python -m wps_sam_core.cli cache`, Lightning Fabric, gloo) on a procedural part world with a
full-size encoder (default `vit_b`, random weights): 1 process x 1 torch thread, 1 process x 2 threads (what one
process gets from both cores), 2 processes x 1 thread (`--devices 2`), interleaved, `--repeats` times each. Two
times per run: `build_s` (the build itself, from the command's own JSON line) and `wall_s` (the whole command:
interpreter, imports, process start, the model; a second process pays its own). Ratios are of medians; each
run's load average at its start is in `runs`.

Honest about the machine: with 2 cores, 2 processes can at best halve the 1-thread time and should roughly match
1 process x 2 threads (the same cores); what scales on a GPU node is processes x GPUs, which this cannot show.
The cores are shared with whatever else runs: load averages at start and end are in the line, and
`cpu_parallel_capacity` measures, at start and end, how many cores' worth of dense fp32 matmul two 1-thread
processes get at once (2.0 = two free cores): the ceiling of any 2-process speedup on this machine. The caches of
1 and 2 processes are also compared byte for byte (`identical_1_vs_2_processes`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, emit, machine

from wps_sam_core.data.world import write_world

CONFIGS = {"1proc_1thread": (1, 1), "1proc_2threads": (1, 2), "2proc_1thread": (2, 1)}  # name: (processes, threads)


def run_cache(world: Path, out: Path, sam_type: str, processes: int, threads: int) -> dict:
    env = {**{k: v for k, v in os.environ.items() if k != "MASTER_PORT"}, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "wps_sam_core.cli", "cache", "--data", str(world), "--split", "train",
           "--sam-type", sam_type, "--sam-checkpoint", "random", "--out", str(out), "--shard-size", "1",
           "--batch-size", "1", "--accelerator", "cpu", "--devices", str(processes), "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"wps-sam cache failed ({processes} processes):\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, "build_s": json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]}


MATMUL = ("import time, torch; torch.set_num_threads(1); a = torch.randn(1024, 1024); s = time.perf_counter()\n"
          "for _ in range(60): a @ a\nprint(time.perf_counter() - s)")


def parallel_capacity() -> float:
    """How many cores' worth of dense fp32 work this machine gives two 1-thread processes at once (2.0 = two free
    cores; shared vCPUs give less): the ceiling of any 2-process speedup here."""
    def matmuls(n: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", MATMUL], stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return [float(p.communicate()[0]) for p in procs]

    alone = matmuls(1)[0]
    return round(2 * alone / max(matmuls(2)), 2)


def same_bytes(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam-type", default="vit_b")
    parser.add_argument("--images", type=int, default=2, help="shards of 1 image: 2 = one per process")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    load_start = machine()
    capacity_start = parallel_capacity()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_world(root / "world", args.images, 0, 256, "train")
        times: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        for repeat in range(args.repeats):  # ABC then CBA: a load that drifts over the run hits all alike
            order = list(CONFIGS) if repeat % 2 == 0 else list(reversed(CONFIGS))
            for name in order:
                processes, threads = CONFIGS[name]
                load = round(os.getloadavg()[0], 2)
                times[name].append({**run_cache(root / "world", root / f"{name}_{repeat}", args.sam_type, processes,
                                                threads), "load_1m": load})
        identical = same_bytes(root / "1proc_1thread_0", root / "2proc_1thread_0")
    median = {name: {k: round(statistics.median(r[k] for r in runs), 2) for k in ("build_s", "wall_s")}
              for name, runs in times.items()}
    two = median["2proc_1thread"]
    emit({
        "bench": "cache_processes", "sam_type": args.sam_type, "images": args.images, "repeats": args.repeats,
        "median": median,
        "speedup_2proc_vs_1proc_1thread_build": round(median["1proc_1thread"]["build_s"] / two["build_s"], 2),
        "speedup_2proc_vs_1proc_2threads_build": round(median["1proc_2threads"]["build_s"] / two["build_s"], 2),
        "speedup_2proc_vs_1proc_1thread_wall": round(median["1proc_1thread"]["wall_s"] / two["wall_s"], 2),
        "cpu_parallel_capacity": [capacity_start, parallel_capacity()],  # at start and end
        "identical_1_vs_2_processes": identical,
        "runs": {name: [{k: round(v, 2) for k, v in r.items()} for r in runs] for name, runs in times.items()},
        "note": "2 shared CPU cores: 2 processes x 1 thread use the same cores as 1 process x 2 threads",
        **load_start,
    })


if __name__ == "__main__":
    main()
