"""rclpy adapters: `PartSegNode` (starts at once) and `LifecyclePartSegNode` (managed), and main().

Both are thin: parameters and topics come from topics.py, frames go to core.PartSegCore, messages
are the real ROS 2 classes through messages.RclpyBackend. rclpy is imported only inside functions,
so this module (and `part_seg_node --transport dds`) works on machines without ROS 2.

Lifecycle (as in the issue and yolo_ros): configure creates the publishers and loads the model (so a
bad checkpoint fails the transition early); activate subscribes and starts the worker (reloading the
model if a deactivate freed it); deactivate unsubscribes, stops the worker and frees the model and its
GPU memory; cleanup destroys the publishers.
"""
from __future__ import annotations

import argparse
import gc
import sys
from functools import lru_cache
from typing import Any, Sequence

from wps_sam_core.errors import WpsSamError

from . import topics


def ros_qos(spec: topics.QosSpec):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=spec.depth,
        reliability=ReliabilityPolicy.RELIABLE if spec.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if spec.durability == "transient_local"
                    else DurabilityPolicy.VOLATILE),
    )


class PartSegRos:
    """The ROS side of one node, by composition so Node and LifecycleNode share every line."""

    def __init__(self, node) -> None:
        from .messages import MessageFactory, RclpyBackend

        self.node = node
        self.backend = RclpyBackend()
        self.factory = MessageFactory(self.backend)
        self.segmenter = None
        self.core = None
        self.publishers: dict[str, Any] = {}
        self.subscription = None
        self.timer = None
        self._declare_parameters()
        node.add_on_set_parameters_callback(self.on_set_parameters)

    # -- parameters
    def _declare_parameters(self) -> None:
        from rcl_interfaces.msg import ParameterDescriptor

        for name, spec in topics.PARAMETERS.items():
            constraints = f"one of {', '.join(spec.choices)}" if spec.choices else ""
            self.node.declare_parameter(name, spec.default, ParameterDescriptor(
                description=spec.description, additional_constraints=constraints))

    def parameters(self) -> dict[str, Any]:
        return {name: self.node.get_parameter(name).value for name in topics.PARAMETERS}

    def on_set_parameters(self, params) -> Any:
        """Set-parameters callback: apply run-time changes, reject invalid values with a reason."""
        from rcl_interfaces.msg import SetParametersResult

        from .core import settings_from_parameters, validate_choice_parameters

        changes = {p.name: p.value for p in params}
        merged = {**self.parameters(), **changes}
        # before configure the class names are unknown: the filter's names are checked at configure
        known = self.segmenter.class_names if self.segmenter else topics.parse_class_filter(merged["class_filter"])
        try:
            validate_choice_parameters(merged)
            settings_from_parameters(merged).validated(known)
        except (WpsSamError, TypeError, ValueError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if self.core is None:  # not configured yet: the values are read at configure time
            return SetParametersResult(successful=True)
        ok, reason = self.core.set_parameters(changes)
        return SetParametersResult(successful=ok, reason=reason)

    # -- lifecycle steps (the plain node runs configure + activate in its constructor)
    def configure(self) -> None:
        for key, spec in topics.OUTPUT_TOPICS.items():
            msg_type = self.backend.cls(spec.msg_type)
            self.publishers[key] = self.node.create_publisher(msg_type, spec.name, ros_qos(spec.qos))
        self._load_model()

    def _load_model(self) -> None:
        from .core import PartSegCore, load_segmenter

        params = self.parameters()
        self.segmenter = load_segmenter(params)
        clock = self.node.get_clock()
        self.core = PartSegCore(
            self.segmenter, self.factory, self.publish,
            overlay_wanted=lambda: self.publishers["overlay"].get_subscription_count() > 0,
            publish_overlay=bool(params["publish_overlay"]), now_ns=lambda: clock.now().nanoseconds,
            warn=self.node.get_logger().warning, name=self.node.get_name(),
        )
        self.node.get_logger().info(f"loaded {self.segmenter.description} on {self.segmenter.device}")

    def _free_model(self) -> None:
        device = getattr(self.segmenter, "device", None)
        self.core = self.segmenter = None
        gc.collect()
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def activate(self) -> None:
        if self.core is None:  # freed by deactivate
            self._load_model()
        params = self.parameters()
        topic, type_name = topics.input_topic(params["image_topic"], params["image_transport"])
        self.subscription = self.node.create_subscription(
            self.backend.cls(type_name), topic, self.on_image, ros_qos(topics.INPUT_QOS_CHOICES[params["input_qos"]]))
        self.timer = self.node.create_timer(float(params["diagnostics_period"]), self.on_diagnostics_timer)
        self.publish("label_info", self.core.label_info_message())
        self.core.start()
        self.node.get_logger().info(f"segmenting {self.subscription.topic_name} -> {topics.resolve('parts', self.node.get_namespace())}/*")

    def deactivate(self) -> None:
        if self.core is not None:
            self.core.stop()
        if self.subscription is not None:
            self.node.destroy_subscription(self.subscription)
            self.subscription = None
        if self.timer is not None:
            self.node.destroy_timer(self.timer)
            self.timer = None
        self._free_model()

    def cleanup(self) -> None:
        self.deactivate()
        for pub in self.publishers.values():
            self.node.destroy_publisher(pub)
        self.publishers.clear()

    # -- callbacks
    def on_image(self, msg) -> None:
        """Subscription callback: O(1) hand-off to the latest-frame slot; the worker does the rest."""
        self.core.submit(msg)

    def on_diagnostics_timer(self) -> None:
        """Timer callback: publish /diagnostics (inference ms, latency, fps, dropped, device)."""
        self.publish("diagnostics", self.core.diagnostics_message())

    def publish(self, key: str, msg: Any) -> None:
        """PartSegCore's output: called from the worker thread (rclpy publishers are thread-safe)."""
        pub = self.publishers.get(key)
        if pub is not None:
            pub.publish(msg)


@lru_cache(maxsize=1)
def node_classes() -> tuple[type, type]:
    """(PartSegNode, LifecyclePartSegNode), defined on first use so importing needs no rclpy."""
    from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
    from rclpy.node import Node

    class PartSegNode(Node):
        """Loads the model and starts segmenting in the constructor."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(topics.NODE_NAME, **kwargs)
            self.part_seg = PartSegRos(self)
            self.part_seg.configure()
            self.part_seg.activate()

        def release(self) -> None:
            """Stop the worker and free the model before the node is destroyed."""
            self.part_seg.cleanup()

    class LifecyclePartSegNode(LifecycleNode):
        """Managed node: `ros2 lifecycle set /part_seg configure|activate|deactivate|cleanup`."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(topics.NODE_NAME, **kwargs)
            self.part_seg = PartSegRos(self)

        def on_configure(self, state: State) -> TransitionCallbackReturn:
            """unconfigured -> inactive: create the publishers, load the model."""
            try:
                self.part_seg.configure()
            except Exception as exc:  # stay unconfigured and say why, instead of an ERROR transition
                self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
                self.part_seg.cleanup()
                return TransitionCallbackReturn.FAILURE
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state: State) -> TransitionCallbackReturn:
            """inactive -> active: subscribe to images, start the worker, publish label_info."""
            self.part_seg.activate()
            return TransitionCallbackReturn.SUCCESS

        def on_deactivate(self, state: State) -> TransitionCallbackReturn:
            """active -> inactive: unsubscribe, stop the worker, free the model and its GPU memory."""
            self.part_seg.deactivate()
            return TransitionCallbackReturn.SUCCESS

        def on_cleanup(self, state: State) -> TransitionCallbackReturn:
            """inactive -> unconfigured: destroy the publishers."""
            self.part_seg.cleanup()
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state: State) -> TransitionCallbackReturn:
            """any -> finalized: as cleanup."""
            self.part_seg.cleanup()
            return TransitionCallbackReturn.SUCCESS

        def release(self) -> None:
            """Stop the worker and free the model before the node is destroyed."""
            self.part_seg.cleanup()

    return PartSegNode, LifecyclePartSegNode


def run_ros(lifecycle: bool, rcl_args: Sequence[str]) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=list(rcl_args))
    node = None
    try:
        plain, managed = node_classes()
        node = (managed if lifecycle else plain)()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except WpsSamError as exc:
        print(f"{topics.EXECUTABLE}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.release()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`part_seg_node [--lifecycle] [--transport ros|dds] [--ros-args ...]` (console script)."""
    import logging

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
