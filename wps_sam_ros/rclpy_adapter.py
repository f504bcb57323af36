"""The ROS side of the part segmentation node, shared by the plain and the lifecycle rclpy node (node.py).

Parameters and topics come from topics.py, frames go to core.PartSegCore, messages are the real ROS 2
classes through messages.RclpyBackend. Steps: configure creates the publishers and loads the model (a bad
checkpoint fails the transition early); activate subscribes and starts the worker (reloading the model if
a deactivate freed it); deactivate unsubscribes, stops the worker and frees the model and its GPU memory;
cleanup destroys the publishers. rclpy is imported inside functions: importing this module needs no ROS 2.
"""
from __future__ import annotations

import gc
import logging
from typing import Any

from wps_sam_core.errors import WpsSamError

from . import topics
from .params import check, check_all

# Logged once the node runs: what a parent process (test/node_process.py) waits for
ROS_READY_MARK = "segmenting"
LIFECYCLE_READY_MARK = "unconfigured, waiting for"
LOGGED_PACKAGES = ("wps_sam_core", "wps_sam_ros")  # their Python logging goes to the node's ROS logger


def ros_qos(spec: topics.QosSpec):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=spec.depth,
        reliability=ReliabilityPolicy.RELIABLE if spec.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if spec.durability == "transient_local"
                    else DurabilityPolicy.VOLATILE),
    )


def parameter_descriptor(name: str, with_range: bool = True):
    """ParameterDescriptor from topics.PARAMETERS: description, choices as text, bounds as a range."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    spec = topics.PARAMETERS[name]
    choices = [*spec.choices, *([spec.pattern] if spec.pattern else [])]
    descriptor = ParameterDescriptor(description=spec.description,
                                     additional_constraints=f"one of {', '.join(choices)}" if choices else "",
                                     read_only=False)
    if not with_range or not spec.bounds:
        return descriptor
    if isinstance(spec.default, float):
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.bounds[0]),
                                                              to_value=float(spec.bounds[1]))]
    else:
        descriptor.integer_range = [IntegerRange(from_value=int(spec.bounds[0]), to_value=int(spec.bounds[1]))]
    return descriptor


class RosLogHandler(logging.Handler):
    """Python logging of wps_sam_core / wps_sam_ros -> the node's ROS logger (and /rosout), not bare stderr."""

    def __init__(self, ros_logger) -> None:
        super().__init__()
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        level = ("error" if record.levelno >= logging.ERROR else "warning" if record.levelno >= logging.WARNING
                 else "info" if record.levelno >= logging.INFO else "debug")
        getattr(self.ros_logger, level)(self.format(record))


class PartSegRos:
    """The ROS side of one node, by composition so Node and LifecycleNode share every line."""

    def __init__(self, node, lifecycle: bool = False) -> None:
        from .messages import MessageFactory, RclpyBackend

        self.node = node
        self.lifecycle = lifecycle
        self.backend = RclpyBackend()
        self.factory = MessageFactory(self.backend)
        self.segmenter = None
        self.core = None
        self.tracker = None  # kept over deactivate/activate: track ids are never reused by this node
        self.publishers: dict[str, Any] = {}
        self.subscription = None
        self.depth_subscriptions: list = []  # depth (message_filters) and CameraInfo, with depth_topic
        self.synchronizer = None  # message_filters.ApproximateTimeSynchronizer of image + depth
        self.camera_info = None  # the latest CameraInfo: K does not change while a camera runs (sync.py says why)
        self.timer = None
        self.log_handler = RosLogHandler(node.get_logger())
        for name in LOGGED_PACKAGES:  # before the model loads: its messages belong to this node
            logging.getLogger(name).addHandler(self.log_handler)
            logging.getLogger(name).setLevel(logging.INFO)
        self._declare_parameters()
        if hasattr(node, "add_pre_set_parameters_callback"):  # Iron and later; Humble refuses ints for floats
            node.add_pre_set_parameters_callback(self.on_pre_set_parameters)
        node.add_on_set_parameters_callback(self.on_set_parameters)

    # -- parameters
    def _declare_parameters(self) -> None:
        """Declare topics.PARAMETERS; a wrong value or type from -p / a params file is one WpsSamError line."""
        from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

        for name, spec in topics.PARAMETERS.items():
            try:
                self.node.declare_parameter(name, spec.default, parameter_descriptor(name))
            except (InvalidParameterTypeException, InvalidParameterValueException):
                self._declare_with_coercion(name)
        check_all(self.parameters())

    def _declare_with_coercion(self, name: str) -> None:
        """The override rcl refused: `1` for a float (rcl types values by their YAML spelling) is accepted, as
        params.check accepts it; anything else raises params.check's one line (expected float, must be in...)."""
        from rclpy.parameter import Parameter

        descriptor = parameter_descriptor(name, with_range=False)
        descriptor.dynamic_typing = True
        value = self.node.declare_parameter(name, topics.PARAMETERS[name].default, descriptor).value
        checked = check(name, value)
        if type(checked) is not type(value):
            self.node.set_parameters([Parameter(name, value=checked)])

    def parameters(self) -> dict[str, Any]:
        return {name: self.node.get_parameter(name).value for name in topics.PARAMETERS}

    def on_pre_set_parameters(self, params: list) -> list:
        """Pre-set callback (Iron+): `ros2 param set ... score_threshold 1` means 1.0, as on the command line."""
        from rclpy.parameter import Parameter

        def as_float(p):
            spec = topics.PARAMETERS.get(p.name)
            if spec and isinstance(spec.default, float) and p.type_ == Parameter.Type.INTEGER:
                return Parameter(p.name, value=float(p.value))
            return p
        return [as_float(p) for p in params]

    def on_set_parameters(self, params) -> Any:
        """Set-parameters callback: judge only this package's parameters; apply run-time ones, refuse with a reason."""
        from rcl_interfaces.msg import SetParametersResult

        from .core import settings_from_parameters, tracker_settings_from_parameters

        changes = {p.name: p.value for p in params if p.name in topics.PARAMETERS}
        if not changes:  # use_sim_time, qos_overrides...: rclpy's and the user's business
            return SetParametersResult(successful=True)
        try:
            changes = check_all(changes)
            merged = {**self.parameters(), **changes}
            # before configure the class names are unknown: the filter's names are checked at configure
            known = self.segmenter.class_names if self.segmenter else topics.parse_class_filter(merged["class_filter"])
            settings_from_parameters(merged).validated(known)
            tracker_settings_from_parameters(merged)
        except (WpsSamError, TypeError, ValueError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if self.core is None:  # not configured yet: the values are read at configure time
            return SetParametersResult(successful=True)
        ok, reason = self.core.set_parameters(changes)
        return SetParametersResult(successful=ok, reason=reason)

    # -- lifecycle steps (the plain node runs configure + activate in its constructor)
    def configure(self) -> None:
        create = self.node.create_lifecycle_publisher if self.lifecycle else self.node.create_publisher
        for key in topics.advertised_outputs(self.parameters()["depth_topic"]):
            spec = topics.OUTPUT_TOPICS[key]
            self.publishers[key] = create(self.backend.cls(spec.msg_type), spec.name, ros_qos(spec.qos))
        self._load_model()

    def _load_model(self) -> None:
        from rclpy.parameter import Parameter

        from wps_sam_core.postprocess.tracking import RESET_BY_CALLER, PartTracker

        from .core import PartSegCore, load_segmenter, tracker_settings_from_parameters
        from .parts_3d import depth_options

        params = self.parameters()
        self.segmenter = load_segmenter(params)
        if self.segmenter.precision != params["precision"]:  # bf16 on a CPU runs fp32: the parameter says so too
            self.node.set_parameters([Parameter("precision", value=self.segmenter.precision)])
        clock = self.node.get_clock()
        tracker_settings = tracker_settings_from_parameters(params)
        if self.tracker is None:
            self.tracker = PartTracker(tracker_settings)
        elif any(self.tracker.diagnostics()[k] for k in ("tracks_confirmed", "tracks_tentative")):
            self.tracker.reset(RESET_BY_CALLER, "node activated again: tracks from before are dropped")
        self.core = PartSegCore(
            self.segmenter, self.factory, self.publish,
            overlay_wanted=lambda: self.publishers["overlay"].get_subscription_count() > 0,
            publish_overlay=bool(params["publish_overlay"]), now_ns=lambda: clock.now().nanoseconds,
            warn=self.node.get_logger().warning, name=self.node.get_name(),
            tracking=bool(params["tracking"]), tracker_settings=tracker_settings, tracker=self.tracker,
            points_wanted=lambda: self.publishers["points"].get_subscription_count() > 0, **depth_options(params),
        )
        logger = self.node.get_logger()
        logger.info(f"loaded {self.segmenter.description} on {self.segmenter.device} ({self.segmenter.precision})")
        if self.segmenter.caveat:
            logger.warning(self.segmenter.caveat)

    def _free_model(self) -> None:
        device = getattr(self.segmenter, "device", None)
        self.core = self.segmenter = None
        gc.collect()
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def activate(self) -> None:
        from rclpy.clock import Clock, ClockType

        if self.core is None:  # freed by deactivate
            self._load_model()
        params = self.parameters()
        topic, type_name = topics.input_topic(params["image_topic"], params["image_transport"])
        qos = ros_qos(topics.INPUT_QOS_CHOICES[params["input_qos"]])
        if self.core.depth_inputs is None:
            self.subscription = self.node.create_subscription(self.backend.cls(type_name), topic, self.on_image, qos)
        else:
            self._subscribe_with_depth(self.backend.cls(type_name), topic, qos, params)
        # steady clock: under use_sim_time without /clock a ROS-time timer never fires and diagnostics would stop
        self.timer = self.node.create_timer(float(params["diagnostics_period"]), self.on_diagnostics_timer,
                                            clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.publish("label_info", self.core.label_info_message())
        self.core.start()
        outputs = topics.resolve("parts", self.node.get_namespace())
        self.node.get_logger().info(f"{ROS_READY_MARK} {self.subscription.topic_name} -> {outputs}/*")

    def _subscribe_with_depth(self, image_cls, topic: str, qos, params: dict[str, Any]) -> None:
        """Image + depth through message_filters.ApproximateTimeSynchronizer (Humble and Jazzy: Subscriber(node,
        type, topic, qos_profile=...)); CameraInfo by a plain subscription, its latest message used."""
        import message_filters

        from .sync import clear_on_restart

        depth_topic, info_topic = self.core.depth_inputs
        image_filter = message_filters.Subscriber(self.node, image_cls, topic, qos_profile=qos)
        depth_filter = message_filters.Subscriber(self.node, self.backend.cls(topics.RAW_IMAGE_TYPE), depth_topic,
                                                  qos_profile=qos)
        logger = self.node.get_logger()
        clear_on_restart([image_filter, depth_filter], lambda: self.synchronizer,  # before the synchronizer: see sync.py
                         lambda: logger.info("image/depth stamps went back (a bag loop?): pairing queues cleared"))
        self.synchronizer = message_filters.ApproximateTimeSynchronizer(
            [image_filter, depth_filter], params["sync_queue_size"], params["sync_slop_s"])
        self.synchronizer.registerCallback(self.on_image_and_depth)
        info = self.node.create_subscription(self.backend.cls(topics.CAMERA_INFO_TYPE), info_topic,
                                             self.on_camera_info, qos)
        self.subscription = image_filter.sub
        self.depth_subscriptions = [depth_filter.sub, info]

    def deactivate(self) -> None:
        if self.core is not None:
            self.core.stop()
        for sub in (self.subscription, *self.depth_subscriptions):
            if sub is not None:
                self.node.destroy_subscription(sub)
        self.subscription, self.depth_subscriptions, self.synchronizer = None, [], None
        self.camera_info = None  # its subscription is gone; activate may read another camera_info_topic
        if self.timer is not None:
            self.node.destroy_timer(self.timer)
            self.timer = None
        self._free_model()

    def cleanup(self) -> None:
        self.deactivate()
        destroy = self.node.destroy_lifecycle_publisher if self.lifecycle else self.node.destroy_publisher
        for pub in self.publishers.values():
            destroy(pub)
        self.publishers.clear()

    def close(self) -> None:
        """Before the node is destroyed: release everything, stop forwarding Python logging."""
        self.cleanup()
        for name in LOGGED_PACKAGES:
            logging.getLogger(name).removeHandler(self.log_handler)

    # -- callbacks
    def on_image(self, msg) -> None:
        """Subscription callback: O(1) hand-off to the latest-frame slot; the worker does the rest."""
        self.core.submit(msg)

    def on_image_and_depth(self, image, depth) -> None:
        """message_filters callback (a synchronised pair): O(1) hand-off, with the latest CameraInfo (or None)."""
        self.core.submit(image, depth, self.camera_info)

    def on_camera_info(self, msg) -> None:
        """CameraInfo subscription callback: keep the latest (K of the depth image)."""
        self.camera_info = msg

    def on_diagnostics_timer(self) -> None:
        """Timer callback: publish /diagnostics (inference ms, latency, fps, dropped, device)."""
        self.publish("diagnostics", self.core.diagnostics_message())

    def publish(self, key: str, msg: Any) -> None:
        """PartSegCore's output, from the worker thread (rclpy publishers are thread-safe); a lifecycle
        publisher drops messages while the node is inactive."""
        pub = self.publishers.get(key)
        if pub is not None:
            pub.publish(msg)
