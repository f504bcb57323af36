"""Many processes (GPUs, nodes) for `wps-sam train` and `wps-sam cache`: the one place that builds their Lightning
Fabric, and the few collectives a command needs beyond Fabric's own.

`Ranks` is what a multi-process loop talks to: rank, world size, gathering Python objects from every rank, and
`fail`, which turns an error seen on any rank into one line printed once (rank 0 raises it, the others exit 2), so
an error on one rank stops all of them at the next exchange instead of leaving them waiting in a collective.
Without Fabric (the library called in one process) every collective is the trivial one.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Callable, TypeVar

from ..errors import WpsSamError

T = TypeVar("T")


def make_fabric(accelerator: str = "auto", devices: int = 1, num_nodes: int = 1, precision: str = "32-true",
                timeout_s: float | None = None):
    """Fabric for `devices` processes per node on `num_nodes` nodes: DDP when more than one process (gloo on CPU,
    NCCL on GPUs), the process group's collectives time out after `timeout_s` (None: torch's default, 30 min).
    Under torchrun or SLURM, Fabric reads the ranks from the environment; otherwise it starts the other local
    processes itself."""
    import lightning as L

    if devices < 1 or num_nodes < 1:
        raise WpsSamError(f"devices and num_nodes must be >= 1, got {devices} and {num_nodes}")
    if logging.getLogger().handlers:  # the CLI's root handler prints Lightning's lines: not its own copy too
        for name in ("lightning.fabric", "lightning_fabric", "lightning"):
            if logging.getLogger(name).handlers:
                logging.getLogger(name).propagate = False
    strategy: Any = "auto"
    if devices * num_nodes > 1:
        strategy = "ddp"
        if timeout_s is not None:
            from lightning.fabric.strategies import DDPStrategy

            strategy = DDPStrategy(timeout=timedelta(seconds=timeout_s))
    return L.Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                    precision=precision)


def launch(fabric) -> None:
    """Start the processes (or join them, under torchrun/SLURM); one copy of every log line: rank 0's."""
    fabric.launch()
    if not fabric.is_global_zero:
        logging.getLogger("wps_sam_core").setLevel(logging.ERROR)


class Ranks:
    """Rank, world size and object collectives of a launched Fabric; `Ranks(None)` is one process."""

    def __init__(self, fabric=None) -> None:
        self.fabric = fabric
        self.rank = fabric.global_rank if fabric is not None else 0
        self.world = fabric.world_size if fabric is not None else 1

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def fail(self, message: str) -> None:
        """Stop every rank for `message` (the same on all of them): rank 0 raises it, the others exit 2 quietly."""
        if self.is_zero:
            raise WpsSamError(message)
        raise SystemExit(2)

    def agree(self, error: str | None) -> None:
        """Stop every rank when any rank has an error (the first in rank order is the line shown)."""
        self.fail_on_any(self.gather(error))

    def fail_on_any(self, gathered: list[str | None]) -> None:
        """`fail` with the first of the errors gathered from the ranks, if any."""
        errors = [e for e in gathered if e]
        if errors:
            more = f" (and {len(errors) - 1} more rank(s) failed)" if len(errors) > 1 else ""
            self.fail(errors[0] + more)

    def on_zero(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0 only (folder checks and writes) and give its result to every rank; a WpsSamError
        there stops every rank. Doubles as a barrier: no rank goes on before rank 0 is done."""
        result, error = None, None
        if self.is_zero:
            try:
                result = work()
            except WpsSamError as exc:
                error = str(exc)
        if self.world > 1:
            import torch.distributed as dist

            box = [(result, error)]
            dist.broadcast_object_list(box, src=0)
            result, error = box[0]
        if error:
            self.fail(error)
        return result
