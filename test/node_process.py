"""`part_seg_node` as a child process: the node exactly as a user starts it (DDS transport, or the rclpy
node where ROS 2 is sourced), for the DDS and rclpy tests, the node benchmark and the soak run (one place
for start-up, log capture and shutdown). A test harness, not part of the package: tests import it as
`from node_process import NodeProcess` (test/ is on sys.path under pytest), benchmarks after putting
test/ on sys.path."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wps_sam_ros.dds import LOOPBACK_CONFIG, READY_MARK
from wps_sam_ros.node import LIFECYCLE_READY_MARK, ROS_READY_MARK

REPO = Path(__file__).resolve().parents[1]  # on PYTHONPATH: the child imports this very checkout


class NodeProcess:
    """Start with `start()` (blocks until the node logs it is ready), stop with `stop()` (SIGINT, as
    Ctrl-C would, then kill if it hangs); the child's stdout+stderr is kept in `log`."""

    def __init__(self, params: Mapping[str, Any], domain_id: int, threads: int | None = None,
                 env: Mapping[str, str] | None = None, transport: str = "dds", lifecycle: bool = False,
                 ros_args: Sequence[str] = (), ready_mark: str | None = None) -> None:
        """transport "ros" runs the rclpy node (ROS_DOMAIN_ID = domain_id); `ros_args` go after the -p flags;
        start() waits for `ready_mark` in the log (default: the transport's own start-up line)."""
        own = ["--domain-id", str(domain_id)] if transport == "dds" else (["--lifecycle"] if lifecycle else [])
        self.cmd = [sys.executable, "-m", "wps_sam_ros.node", "--transport", transport, *own, "--ros-args"]
        for name, value in params.items():
            self.cmd += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
        self.cmd += list(ros_args)
        if ready_mark is None:
            ready_mark = READY_MARK if transport == "dds" else (LIFECYCLE_READY_MARK if lifecycle else ROS_READY_MARK)
        self.ready_mark = ready_mark
        self.env = {**os.environ, **(env or {}), "CYCLONEDDS_URI": LOOPBACK_CONFIG, "ROS_DOMAIN_ID": str(domain_id),
                    "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        if threads is not None:
            self.env["OMP_NUM_THREADS"] = str(threads)
        self.proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._log: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() first"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    @property
    def log(self) -> str:
        while not self._lines.empty():
            self._log.append(self._lines.get())
        return "".join(self._log)

    def start(self, timeout: float = 120.0) -> "NodeProcess":
        # the caller's working directory, so relative checkpoint paths in `params` mean what they say
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env)
        stdout = self.proc.stdout
        threading.Thread(target=lambda: [self._lines.put(line) for line in stdout], daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                continue
            self._log.append(line)
            if self.ready_mark in line:
                return self
        self.stop(timeout=5)
        raise RuntimeError(f"node did not start within {timeout:.0f} s (exit code {self.returncode}):\n{self.log}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT and wait; kill after `timeout`. Returns the exit code (0 = clean shutdown)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        time.sleep(0.2)  # let the reader thread drain the last lines
        return self.proc.returncode

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
