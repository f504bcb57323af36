"""What a training run records as it goes: metrics.csv (append + flush + fsync per row), TensorBoard, and the
console (progress bar on a TTY, else a line every `log_every` steps with step/s and ETA). Rank 0 only: on
other ranks every method is a no-op.

metrics.csv holds one row per step that logged anything (train/* every log_every steps, val/* at each
validation), steps strictly increasing. On --resume from step S the rows after S (written by the killed run
after its last checkpoint) are dropped and TensorBoard purges its events after S, so both read as one history.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..io_utils import atomic_write_text

log = logging.getLogger(__name__)


class MetricsCSV:
    """One row per step; a new column (first validation) rewrites the file atomically with the wider header."""

    def __init__(self, path: Path, keep_until: int | None) -> None:
        """keep_until: the resumed step (rows after it are dropped); None: a new run (any old file is replaced)."""
        self.path = path
        self.header: list[str] = []
        self.rows: list[dict] = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.header = list(reader.fieldnames or [])
                kept: dict[int, dict] = {}
                for row in reader:
                    try:
                        step = int(row["step"])
                    except (KeyError, TypeError, ValueError):
                        continue  # a row cut by a kill mid-write
                    if step <= keep_until:
                        kept[step] = row  # the last one of a step wins
                self.rows = [kept[s] for s in sorted(kept)]
            dropped = "" if not self.rows else f" (kept {len(self.rows)} rows up to step {keep_until})"
            log.info("metrics: appending to %s%s", path, dropped)
        self._rewrite()

    def _rewrite(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.header, extrasaction="ignore")
        if self.header:
            writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())

    def append(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **{k: _fmt(v) for k, v in values.items()}}
        self.rows.append(row)
        new = [k for k in row if k not in self.header]
        if new:
            self.header += new
            self._rewrite()
            return
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.header).writerow(row)
            handle.flush()
            os.fsync(handle.fileno())


def _fmt(value: float) -> str:
    return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)


class RunLog:
    """The sinks of one run: CSV + TensorBoard + console lines (global rank 0; elsewhere nothing)."""

    def __init__(self, out: Path, active: bool, start_step: int, total: int, resumed: bool, progress: bool,
                 log_every: int) -> None:
        self.active, self.total, self.log_every = active, total, log_every
        self.start_step, self.started = start_step, time.perf_counter()
        self.pending: dict[str, float] = {}
        self.tb = self.csv = self.bar = None
        if not active:
            return
        self.csv = MetricsCSV(out / "metrics.csv", start_step if resumed else None)
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: events a killed run wrote after the resumed step are hidden, as in metrics.csv
            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1 if resumed else None)
        except ModuleNotFoundError:
            log.warning("tensorboard not installed: metrics.csv only")
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start_step, desc="training", unit="step")

    # ---- values --------------------------------------------------------------------------
    def scalars(self, step: int, values: dict[str, float], csv_row: bool = True) -> None:
        if not self.active:
            return
        if csv_row:
            self.pending.update(values)
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key, value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self.active and self.tb is not None:
            self.tb.add_image(tag, image, step, dataformats="HWC")

    def end_step(self, step: int) -> None:
        """Write this step's row (if it logged anything) and advance the progress display."""
        if not self.active:
            return
        if self.pending:
            self.csv.append(step, self.pending)
            self.pending = {}
            if self.tb is not None:
                self.tb.flush()
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def progress(self, step: int, loss: float, lr: float) -> None:
        """At log steps: the bar's postfix, or (no TTY) one line with step/s and ETA."""
        if not self.active:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}")
            return
        rate = (step - self.start_step) / max(time.perf_counter() - self.started, 1e-9)
        eta = _duration((self.total - step) / rate) if rate > 0 else "?"
        log.info("step %d/%d (%.1f %%) · %.2f step/s · ETA %s · loss_total %.4f · lr %.3g",
                 step, self.total, 100 * step / self.total, rate, eta, loss, lr)

    def info(self, message: str, *args) -> None:
        if self.active:
            (self.bar.write if self.bar is not None else log.info)(message % args if args else message)

    def close(self) -> None:
        if not self.active:
            return
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
