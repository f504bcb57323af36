"""ROS-less live transport over Cyclone DDS (pip `cyclonedds`) with ROS 2 wire conventions.

What makes it interoperate with ROS 2 nodes on rmw_cyclonedds:
  - topic names: ROS topic "/parts/masks" is DDS topic "rt/parts/masks";
  - type names: "sensor_msgs/msg/Image" is "sensor_msgs::msg::dds_::Image_";
  - layouts: the IdlStruct types are generated from the same message definitions rosbags serialises
    (Humble typestore + msgdefs), field for field, so samples are byte-identical plain CDR (XCDR1);
  - QoS: topics.QosSpec mapped to reliability / durability / keep-last history;
  - type hashes (ROS 2 Iron and later): every DataWriter and DataReader carries USER_DATA
    `typehash=RIHS01_<sha256 hex>;`, the string rmw_cyclonedds_cpp writes and reads back from discovery;
  - dispose / unregister samples (a publisher leaving) are not frames: they are skipped.
The transport never imports rclpy. `part_seg_node --transport dds --ros-args ...` runs it.
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import types as pytypes
from functools import lru_cache
from typing import Any, Sequence

from . import topics

log = logging.getLogger(__name__)

# Printed (flushed) once the node listens: what a parent process waits for (test/node_process.py).
READY_MARK = "ready, listening on"
LOOPBACK_CONFIG = (
    "<CycloneDDS><Domain Id=\"any\"><General><Interfaces><NetworkInterface name=\"lo\"/></Interfaces>"
    "<AllowMulticast>false</AllowMulticast></General><Discovery><ParticipantIndex>auto</ParticipantIndex>"
    "<Peers><Peer Address=\"127.0.0.1\"/></Peers></Discovery></Domain></CycloneDDS>"
)


def dds_topic(ros_topic: str, namespace: str = "") -> str:
    """ROS 2 topic name -> DDS topic name (rmw convention: 'rt' prefix for topics)."""
    return "rt" + topics.resolve(ros_topic, namespace)


def dds_type_name(ros_type: str) -> str:
    pkg, kind, name = ros_type.split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


# ---- IdlStruct types generated from the message definitions ---------------------------------------
@lru_cache(maxsize=None)
def idl_type(ros_type: str) -> type:
    """The Cyclone DDS IdlStruct class for a ROS 2 message type (built once, nested types first)."""
    from cyclonedds.idl import IdlStruct
    from cyclonedds.idl import types as t

    from .messages import ros2_typestore

    base = {"bool": bool, "byte": t.uint8, "char": t.uint8, "int8": t.int8, "uint8": t.uint8,
            "int16": t.int16, "uint16": t.uint16, "int32": t.int32, "uint32": t.uint32, "int64": t.int64,
            "uint64": t.uint64, "float32": t.float32, "float64": t.float64}

    def annotation_and_default(desc) -> tuple[Any, Any]:
        kind, arg = desc
        if kind == 1:  # BASE: (name, string bound)
            name, bound = arg
            if name == "string":
                return (t.bounded_str[bound] if bound else str), dataclasses.field(default="")
            zero = False if name == "bool" else (0.0 if name.startswith("float") else 0)
            return base[name], dataclasses.field(default=zero)
        if kind == 2:  # NAME: nested message
            nested = idl_type(arg)
            return nested, dataclasses.field(default_factory=nested)
        sub, size = arg
        sub_ann, sub_default = annotation_and_default(sub)
        octets = sub[0] == 1 and sub[1][0] in ("uint8", "byte", "char")
        if kind == 3:  # ARRAY
            fill = sub_default.default if sub_default.default is not dataclasses.MISSING else None
            factory = (lambda: bytes(size)) if octets else (lambda: [fill] * size)
            return t.array[sub_ann, size], dataclasses.field(default_factory=factory)
        ann = t.sequence[sub_ann, size] if size else t.sequence[sub_ann]
        return ann, dataclasses.field(default_factory=bytes if octets else list)

    _, fields = ros2_typestore().fielddefs[ros_type]
    body: dict[str, Any] = {"__annotations__": {}}
    for name, desc in fields:
        body["__annotations__"][name], body[name] = annotation_and_default(desc)
    cls = pytypes.new_class(ros_type.replace("/", "__"), (IdlStruct,), {"typename": dds_type_name(ros_type)},
                            lambda ns: ns.update(body))
    cls = dataclasses.dataclass(cls)
    _fast_octet_sequences(cls)
    return cls


def _fast_octet_sequences(cls: type) -> None:
    """Serialise uint8[] as one bytes block instead of element by element (same CDR bytes).

    cyclonedds-python packs sequence<uint8> value by value, ~80 ms per VGA frame; its BytesMachine
    writes the identical uint32 length + raw bytes. The swap is skipped if the internals differ, and
    test_ros_messages checks the bytes against rosbags' serializer either way.
    """
    try:
        from cyclonedds.idl._machinery import BytesMachine, PlainCdrV2SequenceOfPrimitiveMachine

        cls.__idl__.populate()
        for machine in (cls.__idl__.v1_machine, cls.__idl__.v2_machine):
            for name, member in list(machine.members_machines.items()):
                if isinstance(member, PlainCdrV2SequenceOfPrimitiveMachine) and member.code == "B":
                    machine.members_machines[name] = BytesMachine(member.max_length)
    except (ImportError, AttributeError):  # another cyclonedds version: keep its (slower) machine
        log.debug("cyclonedds internals differ; uint8[] stays element-wise", exc_info=True)


class DdsBackend:
    """messages.MessageBackend over the generated IdlStruct types."""

    def new(self, type_name: str, **fields: Any) -> Any:
        return idl_type(type_name)(**fields)

    def octets(self, data: bytes) -> Any:
        return bytes(data)

    def float64s(self, values: Sequence[float]) -> Any:
        return [float(v) for v in values]

    def byte(self, value: int) -> Any:
        return int(value)


# ---- type hashes (REP 2011, ROS 2 Iron and later) ------------------------------------------------
def _jazzy_typestore():
    """rosbags' ROS 2 Jazzy typestore plus vision_msgs 4.1 (msgdefs): the definitions Jazzy hashes."""
    from .messages import typestore_with_vision_msgs

    return typestore_with_vision_msgs("JAZZY")


@lru_cache(maxsize=None)
def type_hash(ros_type: str) -> str:
    """The RIHS01 type hash ROS 2 Jazzy computes for a message type ('RIHS01_' + 64 lowercase hex).

    Hashed from the Jazzy definitions; the IdlStruct layouts come from the Humble ones, and
    test_dds_wire checks that both give the same hash (= the same layout) for every type the node uses.
    """
    return _jazzy_typestore().hash_rihs01(ros_type)


def user_data(ros_type: str) -> bytes:
    """Endpoint USER_DATA as rmw_cyclonedds_cpp writes it (rmw_dds_common::encode_type_hash_for_user_data_qos)."""
    return f"typehash={type_hash(ros_type)};".encode("ascii")


def dds_qos(spec: topics.QosSpec, ros_type: str | None = None):
    """Cyclone QoS for a QosSpec; with `ros_type`, plus the USER_DATA type hash ROS 2 peers expect."""
    from cyclonedds.qos import Policy, Qos
    from cyclonedds.util import duration

    reliability = (Policy.Reliability.Reliable(duration(seconds=1)) if spec.reliability == "reliable"
                   else Policy.Reliability.BestEffort)
    durability = Policy.Durability.TransientLocal if spec.durability == "transient_local" else Policy.Durability.Volatile
    policies = [reliability, durability, Policy.History.KeepLast(spec.depth)]
    if ros_type is not None:
        policies.append(Policy.Userdata(user_data(ros_type)))
    return Qos(*policies)


# ---- the transport -----------------------------------------------------------------------------
class DdsTransport:
    """Subscribes to the image topic (with depth_topic: also depth and CameraInfo, paired by sync.DepthFrameSync),
    runs a PartSegCore, publishes rt/parts/* and rt/diagnostics."""

    def __init__(self, segmenter, params: dict[str, Any], domain_id: int = 0, namespace: str = "",
                 name: str = topics.NODE_NAME) -> None:
        from cyclonedds.core import Listener
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        from .core import PartSegCore, tracker_settings_from_parameters
        from .parts_3d import depth_options
        from .messages import MessageFactory
        from .sync import DepthFrameSync

        self.participant = DomainParticipant(domain_id)
        self.writers = {}
        for key in topics.advertised_outputs(params["depth_topic"]):
            spec = topics.OUTPUT_TOPICS[key]
            topic = Topic(self.participant, dds_topic(spec.name, namespace), idl_type(spec.msg_type))
            self.writers[key] = DataWriter(self.participant, topic, qos=dds_qos(spec.qos, spec.msg_type))
        self.core = PartSegCore(
            segmenter, MessageFactory(DdsBackend()), self._publish,
            overlay_wanted=lambda: bool(self.writers["overlay"].get_matched_subscriptions()),
            publish_overlay=bool(params["publish_overlay"]), name=name,
            tracking=bool(params["tracking"]), tracker_settings=tracker_settings_from_parameters(params),
            points_wanted=lambda: bool(self.writers["points"].get_matched_subscriptions()), **depth_options(params),
        )
        in_qos = topics.INPUT_QOS_CHOICES[params["input_qos"]]

        def reader(ros_topic: str, ros_type: str, handle) -> Any:
            topic = Topic(self.participant, dds_topic(ros_topic, namespace), idl_type(ros_type))
            return DataReader(self.participant, topic, qos=dds_qos(in_qos, ros_type),
                              listener=Listener(on_data_available=lambda r: self._on_data(r, handle)))

        in_topic, in_type = topics.input_topic(params["image_topic"], params["image_transport"])
        self.input_topic = dds_topic(in_topic, namespace)
        self.depth_readers: list = []
        on_image = self.core.submit
        if self.core.depth_inputs is not None:  # colour + depth pairs (message_filters' policy) + latest CameraInfo
            sync = DepthFrameSync(params["sync_queue_size"], params["sync_slop_s"], self.core.submit)
            depth_topic, info_topic = self.core.depth_inputs
            self.depth_readers = [reader(depth_topic, topics.RAW_IMAGE_TYPE, sync.add_depth),
                                  reader(info_topic, topics.CAMERA_INFO_TYPE, sync.add_camera_info)]
            on_image = sync.add_image
        self.reader = reader(in_topic, in_type, on_image)
        self.diagnostics_period = float(params["diagnostics_period"])
        self.invalid_samples = 0  # dispose / unregister notifications taken from the input (not frames)
        self._stop = threading.Event()
        self._diag_thread: threading.Thread | None = None

    def _publish(self, key: str, msg: Any) -> None:
        self.writers[key].write(msg)

    def _on_data(self, reader, handle) -> None:
        """Cyclone's listener thread: hand every new sample to `handle` (the latest-frame slot, or the depth
        synchroniser in front of it; never blocks).

        A publisher that disposes, unregisters or leaves (a ROS 2 node exiting) makes Cyclone deliver
        an InvalidSample (sample_info.valid_data false, no message fields): not a frame, skipped.
        """
        for sample in reader.take(N=16):
            info = getattr(sample, "sample_info", None)
            if info is not None and not info.valid_data:
                self.invalid_samples += 1
                log.debug("input %s: instance state %s from a publisher (not a frame)", reader.topic.name,
                          info.instance_state)
                continue
            handle(sample)

    def _diagnostics_loop(self) -> None:
        while not self._stop.wait(self.diagnostics_period):
            self._publish("diagnostics", self.core.diagnostics_message())

    def start(self) -> None:
        self._publish("label_info", self.core.label_info_message())
        self.core.start()
        self._stop.clear()
        self._diag_thread = threading.Thread(target=self._diagnostics_loop, name="diagnostics", daemon=True)
        self._diag_thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.core.stop()
        if self._diag_thread is not None:
            self._diag_thread.join(5)
        for reader in (self.reader, *self.depth_readers):
            reader.set_listener(None)


def main(argv: Sequence[str]) -> int:
    """`part_seg_node --transport dds [--domain-id N] [--ros-args -p name:=value --params-file F]`."""
    import argparse
    import os

    from .core import load_segmenter
    from .params import parse_ros_args, split_ros_args

    parser = argparse.ArgumentParser(prog="part_seg_node --transport dds")
    parser.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "0")))
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = run until Ctrl-C)")
    own_args, ros_args = split_ros_args(argv)
    own = parser.parse_args(own_args)
    params, name, namespace = parse_ros_args(ros_args)
    segmenter = load_segmenter(params)
    if segmenter.caveat:  # the embedded demo model: say so at start (and in /diagnostics, core.py)
        log.warning(segmenter.caveat)
    transport = DdsTransport(segmenter, params, own.domain_id, namespace, name)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    transport.start()
    log.info("%s: %s -> %s on DDS domain %d (%s)", name, transport.input_topic,
             dds_topic("parts/*", namespace), own.domain_id, segmenter.description)
    print(f"{name}: {READY_MARK} {transport.input_topic}", flush=True)
    stop.wait(own.duration or None)
    transport.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
