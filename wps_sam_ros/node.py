"""rclpy nodes: `PartSegNode` (starts at once) and `LifecyclePartSegNode` (managed), and main().

Both are thin shells over rclpy_adapter.PartSegRos. rclpy is imported only inside functions, so this module
(and `part_seg_node --transport dds`) works on machines without ROS 2.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from functools import lru_cache
from typing import Any, Sequence

from wps_sam_core.errors import WpsSamError

from . import topics
from .rclpy_adapter import LIFECYCLE_READY_MARK, ROS_READY_MARK, PartSegRos

__all__ = ["LIFECYCLE_READY_MARK", "ROS_READY_MARK", "main", "node_classes", "run_ros"]


@lru_cache(maxsize=1)
def node_classes() -> tuple[type, type]:
    """(PartSegNode, LifecyclePartSegNode), defined on first use so importing needs no rclpy."""
    from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
    from rclpy.node import Node

    class PartSegNode(Node):
        """Loads the model and starts segmenting in the constructor."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(topics.NODE_NAME, **kwargs)
            self.finished = threading.Event()  # never set: a plain node runs until a signal
            self.part_seg = PartSegRos(self)
            self.part_seg.configure()
            self.part_seg.activate()

        def release(self) -> None:
            """Stop the worker and free the model before the node is destroyed."""
            self.part_seg.close()

    class LifecyclePartSegNode(LifecycleNode):
        """Managed node: `ros2 lifecycle set /part_seg configure|activate|deactivate|cleanup|shutdown`.

        Every transition either completes or rolls back what it started and returns FAILURE with a logged
        reason, so a failed step never leaves publishers, subscriptions or a model behind.
        """

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(topics.NODE_NAME, **kwargs)
            self.finished = threading.Event()  # set when finalized: the process exits
            self.part_seg = PartSegRos(self, lifecycle=True)
            self.get_logger().info(f"{LIFECYCLE_READY_MARK} configure "
                                   f"(ros2 lifecycle set {self.get_fully_qualified_name()} configure)")

        def _failed(self, step: str, exc: Exception) -> TransitionCallbackReturn:
            self.get_logger().error(f"{step} failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE

        def on_configure(self, state: State) -> TransitionCallbackReturn:
            """unconfigured -> inactive: create the publishers, load the model."""
            try:
                self.part_seg.configure()
            except Exception as exc:  # stay unconfigured and say why, instead of an ERROR transition
                self.part_seg.cleanup()
                return self._failed("configure", exc)
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state: State) -> TransitionCallbackReturn:
            """inactive -> active: enable the publishers, subscribe, start the worker, publish label_info."""
            super().on_activate(state)  # lifecycle publishers publish from here on
            try:
                self.part_seg.activate()
            except Exception as exc:  # roll back to a clean inactive node (rclpy would swallow it as ERROR)
                self.part_seg.deactivate()
                super().on_deactivate(state)
                return self._failed("activate", exc)
            return TransitionCallbackReturn.SUCCESS

        def on_deactivate(self, state: State) -> TransitionCallbackReturn:
            """active -> inactive: unsubscribe, stop the worker, free the model and its GPU memory."""
            self.part_seg.deactivate()
            return super().on_deactivate(state)

        def on_cleanup(self, state: State) -> TransitionCallbackReturn:
            """inactive -> unconfigured: destroy the publishers."""
            self.part_seg.cleanup()
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state: State) -> TransitionCallbackReturn:
            """any -> finalized: release everything; main() then exits."""
            self.part_seg.cleanup()
            self.finished.set()
            return TransitionCallbackReturn.SUCCESS

        def on_error(self, state: State) -> TransitionCallbackReturn:
            """An exception in a transition: release everything and return to unconfigured."""
            self.get_logger().error(f"error while in {state.label}: releasing everything, back to unconfigured")
            self.part_seg.cleanup()
            return TransitionCallbackReturn.SUCCESS

        def release(self) -> None:
            """Stop the worker and free the model before the node is destroyed."""
            self.part_seg.close()

    return PartSegNode, LifecyclePartSegNode


def _rcl_error_line(exc: Exception) -> str:
    """rcl's error text without its C source location and traceback tail."""
    return str(exc).split(", at ")[0].splitlines()[0]


def run_ros(lifecycle: bool, rcl_args: Sequence[str]) -> int:
    """Run the rclpy node until Ctrl-C / SIGTERM, or (lifecycle) until it is finalized.

    rclpy's own signal handler would shut the context down at once, while the worker may still be
    publishing ("publisher's context is invalid"); here a signal only ends the wait, then the worker
    stops, the node is destroyed, and only then the context shuts down.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    try:
        rclpy.init(args=list(rcl_args), signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # RCLError: a -p value or params file rcl cannot parse
        print(f"{topics.EXECUTABLE}: error: {_rcl_error_line(exc)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # launch's escalation: stop as on Ctrl-C
    node = executor = None
    try:
        plain, managed = node_classes()
        node = (managed if lifecycle else plain)()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        threading.Thread(target=executor.spin, name="rclpy-executor", daemon=True).start()
        node.finished.wait()  # a lifecycle shutdown sets it; a signal raises KeyboardInterrupt here
    except KeyboardInterrupt:
        pass
    except WpsSamError as exc:
        print(f"{topics.EXECUTABLE}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=10.0)  # waits for the callback in progress
        if node is not None:
            node.release()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`part_seg_node [--lifecycle] [--transport ros|dds] [--ros-args ...]` (console script)."""
    from .params import split_ros_args

    argv = list(sys.argv[1:] if argv is None else argv)
    own, ros_args = split_ros_args(argv)
    parser = argparse.ArgumentParser(
        prog=topics.EXECUTABLE, description="WPS-SAM part segmentation node",
        epilog="dds transport only: --domain-id N (default $ROS_DOMAIN_ID or 0), --duration SECONDS. "
               "Parameters: --ros-args -p name:=value --params-file FILE (both transports).")
    parser.add_argument("--transport", choices=["ros", "dds"], default="ros",
                        help="ros: rclpy node (needs ROS 2); dds: Cyclone DDS with ROS 2 wire names, no ROS needed")
    parser.add_argument("--lifecycle", action="store_true", help="managed (lifecycle) node; ros transport only")
    opts, rest = parser.parse_known_args(own)
    if opts.transport == "dds":
        from . import dds

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return dds.main(rest + ros_args)
        except WpsSamError as exc:
            print(f"{topics.EXECUTABLE}: error: {exc}", file=sys.stderr)
            return 2
    return run_ros(opts.lifecycle, [sys.argv[0], *rest, *ros_args])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
