"""`wps-sam bag IN OUT --image-topic T`: segment a rosbag2 (sqlite3 or MCAP) offline with `rosbags`.

OUT holds every input message unchanged plus the part topics (topics.OUTPUT_TOPICS, root namespace)
written at the bag timestamp of the image they came from, so `ros2 bag play OUT` replays camera and
parts in step. Raw (sensor_msgs/Image) and compressed (sensor_msgs/CompressedImage) topics work.
The bag is written to a temporary folder next to OUT and renamed into place when complete.

Bags of every ROS 2 release are read: Crystal..Eloquent wrote type names without `/msg/`
(`sensor_msgs/Image`), sometimes no metadata.yaml, and sqlite3 bags before Iron store no message
definitions; such names are normalised (modern_type_name), definitions come from the built-in Humble
type store, and OUT carries the modern names so current ROS 2 can play it. rosbags' rosbag2 Reader is
used directly, so a rosbag2 folder named `*.bag` is not taken for a ROS 1 bag.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from wps_sam_core.errors import WpsSamError

from . import topics

log = logging.getLogger(__name__)
STORAGES = ("sqlite3", "mcap")
STORAGE_SUFFIXES = (".db3", ".mcap")


# rosbag2 metadata.yaml version of OUT. Version 9 (Jazzy) writes offered_qos_profiles as a YAML list, which
# Humble's reader decodes as a string ("yaml-cpp: bad conversion"); version 8 keeps the string form that Humble,
# Iron and Jazzy all read, so one output bag plays everywhere.
BAG_METADATA_VERSION = 8


def register(sub: argparse._SubParsersAction) -> None:
    from wps_sam_core.cli.common import add_model_args
    from wps_sam_core.cli.track import add_tracking_args

    p = sub.add_parser("bag", help="segment the images of a rosbag2 into a new bag with the part topics")
    p.add_argument("input", help="input rosbag2 (folder, .db3 or .mcap)")
    p.add_argument("output", help="output rosbag2 folder (must not exist)")
    p.add_argument("--image-topic", required=True, help="image topic, e.g. /camera/image_raw")
    p.add_argument("--compressed", choices=["auto", "yes", "no"], default="auto",
                   help="auto: the topic's own type, else <topic>/compressed; yes: <topic>/compressed "
                        "(CompressedImage); no: raw Image only")
    p.add_argument("--storage", choices=["auto", *STORAGES], default="auto", help="output storage (auto = input's)")
    p.add_argument("--overlay", action="store_true", help="also write parts/overlay (rgb8)")
    p.add_argument("--class-filter", default="", help="comma-separated class names to keep")
    p.add_argument("--depth-topic", default="", help="aligned depth Image (16UC1 mm, 32FC1 m) paired with the images "
                   "as the node pairs them: also write parts/detections_3d; images without a depth partner are skipped")
    p.add_argument("--camera-info-topic", default="", help="CameraInfo of the depth image (default: camera_info next "
                   "to --depth-topic)")
    p.add_argument("--sync-slop-s", type=float, default=topics.PARAMETERS["sync_slop_s"].default,
                   help="image and depth pair when their stamps are less than this apart (s)")
    p.add_argument("--sync-queue-size", type=int, default=topics.PARAMETERS["sync_queue_size"].default,
                   help="messages per input waiting for a partner")
    p.add_argument("--depth-scale-to-image", action="store_true",
                   help="resize a depth image of another size to the image's (nearest neighbour, K scaled)")
    p.add_argument("--points", action="store_true", help="with --depth-topic: also write parts/points")
    add_model_args(p)
    add_tracking_args(p, what="bag's images (one tracker, header stamps)")
    p.set_defaults(func=run_bag)


def run_bag(args: argparse.Namespace) -> int:
    from wps_sam_core.cli.common import segmenter_from_args
    from wps_sam_core.cli.track import tracker_settings_from_args

    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise WpsSamError(f"input bag {src} does not exist")
    if dst.exists():
        raise WpsSamError(f"output {dst} exists already; choose a new path")
    tracker_settings = tracker_settings_from_args(args)  # before the model loads: a bad flag fails fast
    depth_params = depth_parameters_from_args(args)
    segmenter = segmenter_from_args(args)
    if args.class_filter:
        segmenter.update_settings(class_filter=topics.parse_class_filter(args.class_filter))
    counts = process_bag(src, dst, segmenter, args.image_topic, args.compressed, args.storage, args.overlay,
                         tracker_settings if args.tracking else None, depth_params)
    for topic, count in sorted(counts.items()):
        print(f"{topic}: {count} messages")
    print(f"wrote {dst}")
    return 0


def depth_parameters_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The node's 3D parameters from the flags (checked by the node's rule), None without --depth-topic."""
    from .params import check

    if not args.depth_topic:
        if args.camera_info_topic or args.points:
            raise WpsSamError("--camera-info-topic and --points need --depth-topic")
        return None
    values = {"depth_topic": args.depth_topic, "camera_info_topic": args.camera_info_topic,
              "sync_slop_s": args.sync_slop_s, "sync_queue_size": args.sync_queue_size,
              "depth_scale_to_image": args.depth_scale_to_image, "publish_points": args.points}
    return {name: check(name, value) for name, value in values.items()}


def input_storage(path: Path) -> str:
    if path.suffix == ".mcap" or (path.is_dir() and any(path.glob("*.mcap"))):
        return "mcap"
    return "sqlite3"


def modern_type_name(name: str) -> str:
    """`pkg/Type` (ROS 2 Crystal..Eloquent bags, ROS 1) -> `pkg/msg/Type`; other names are returned as given."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 and all(parts) else name


def reader_path(src: Path) -> Path:
    """What rosbags' Reader opens for IN: a folder with metadata.yaml, or one .db3/.mcap file."""
    if src.is_dir():
        if (src / "metadata.yaml").exists():
            return src
        # early rosbag2 (Crystal) wrote no metadata.yaml; a lone storage file describes its own topics
        files = sorted(p for p in src.iterdir() if p.suffix in STORAGE_SUFFIXES)
        if len(files) == 1:
            return files[0]
        found = ", ".join(p.name for p in files) or "no .db3 or .mcap file"
        raise WpsSamError(f"{src} has no metadata.yaml and {found}; give a single .db3 or .mcap file as IN")
    if src.suffix == ".bag":
        raise WpsSamError(f"{src} is a ROS 1 bag; convert it to rosbag2 first: rosbags-convert --src {src} --dst DIR")
    if src.suffix not in STORAGE_SUFFIXES:
        raise WpsSamError(f"{src}: unknown bag file type {src.suffix!r}; expected a rosbag2 folder, .db3 or .mcap")
    return src


@contextmanager
def open_reader(src: Path) -> Iterator[Any]:
    """rosbags' rosbag2 Reader on IN; unreadable files become one-line errors."""
    from rosbags.rosbag2 import Reader, ReaderError

    try:
        reader = Reader(reader_path(src))
        reader.open()
    except ReaderError as exc:
        raise WpsSamError(f"cannot read bag {src}: {exc}") from None
    try:
        yield reader
    finally:
        reader.close()


def pick_connections(connections, topic: str, msg_type: str, what: str) -> list:
    """The connections of `topic` with type `msg_type` (names of any ROS 2 release); none is one line."""
    picked = [c for c in connections if c.topic == topic and modern_type_name(c.msgtype) == msg_type]
    if not picked:
        raise _not_in_bag(connections, f"{what} topic {topic!r} ({msg_type})")
    return picked


def _not_in_bag(connections, what: str) -> WpsSamError:
    """'no WHAT in the bag; topics: ...' (the bag's topics and types, so a typo is seen at once)."""
    available = sorted(f"{c.topic} ({c.msgtype})" for c in connections)
    return WpsSamError(f"no {what} in the bag; topics: {', '.join(available) or 'none'}")


def pick_image_connections(connections, image_topic: str, compressed: str) -> list:
    """The connections to segment, by --image-topic and --compressed (type names of any ROS 2 release)."""
    raw_type, comp_type = topics.RAW_IMAGE_TYPE, topics.COMPRESSED_IMAGE_TYPE
    comp_topic = image_topic.rstrip("/") + topics.COMPRESSED_SUFFIX

    def by_topic(topic: str, types: tuple[str, ...]) -> list:
        return [c for c in connections if c.topic == topic and modern_type_name(c.msgtype) in types]

    if compressed == "no":
        picked = by_topic(image_topic, (raw_type,))
    elif compressed == "yes":
        picked = by_topic(image_topic, (comp_type,)) or by_topic(comp_topic, (comp_type,))
    else:
        picked = by_topic(image_topic, (raw_type, comp_type)) or by_topic(comp_topic, (comp_type,))
    if not picked:
        raise _not_in_bag(connections, f"{'compressed ' if compressed == 'yes' else ''}image topic {image_topic!r}")
    return picked


def _qos_profile(spec: topics.QosSpec):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    never = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, spec.depth,
               QosReliability.RELIABLE if spec.reliability == "reliable" else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if spec.durability == "transient_local" else QosDurability.VOLATILE,
               never, never, QosLiveliness.AUTOMATIC, never, False)


def process_bag(src: Path, dst: Path, segmenter, image_topic: str, compressed: str = "auto",
                storage: str = "auto", overlay: bool = False, tracking=None,
                depth_params: dict[str, Any] | None = None) -> dict[str, int]:
    """Write dst = src + part topics; returns messages per output topic. Atomic: all or nothing.

    depth_params: the node's 3D parameters (depth_parameters_from_args): images are paired with depth as the node
    pairs them (sync.DepthFrameSync: message_filters' policy, latest CameraInfo), in bag order; only paired images
    are segmented, and their outputs, 3D ones included, are written at the image's bag timestamp.

    tracking: a TrackerSettings to write track ids (one tracker over the images in bag order, stamped by their
    headers; a stamp going backwards or a long gap resets it, as in the node), None for per-frame ids."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from tqdm import tqdm

    from .core import PartSegCore, stamp_ns
    from .parts_3d import depth_options
    from .messages import MessageFactory, RosbagsBackend, ros2_typestore
    from .sync import DepthFrameSync

    typestore = ros2_typestore()
    storage = input_storage(src) if storage == "auto" else storage
    if dst.exists():
        raise WpsSamError(f"output {dst} exists already; choose a new path")
    dst.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(dst)
    # same filesystem as dst, so the final rename is atomic; the pid in the name tells a killed run's folder
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.{os.getpid()}.", suffix=".tmp", dir=dst.parent))
    try:
        tmp_bag = staging / dst.name
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(tmp_bag, version=BAG_METADATA_VERSION, storage_plugin=plugin)
        with open_reader(src) as reader, writer:
            images = {c.id for c in pick_image_connections(reader.connections, image_topic, compressed)}
            depth_opts = depth_options(depth_params) if depth_params else {}
            depths: set[int] = set()
            infos: set[int] = set()
            depth_topic, info_topic = depth_opts["depth_inputs"] if depth_opts else ("", "")
            if depth_opts:
                depths = {c.id for c in pick_connections(reader.connections, depth_topic, topics.RAW_IMAGE_TYPE,
                                                         "depth image")}
                infos = {c.id for c in pick_connections(reader.connections, info_topic, topics.CAMERA_INFO_TYPE,
                                                        "CameraInfo")}
            copies = {c.id: _copy_connection(writer, c, typestore) for c in reader.connections}
            outputs: dict[str, Any] = {}
            for key in topics.advertised_outputs(depth_topic):
                if key == "diagnostics" or (key == "overlay" and not overlay) or (
                        key == "points" and not depth_opts["publish_points"]):
                    continue  # diagnostics describe a live node, not a recording
                spec = topics.OUTPUT_TOPICS[key]
                outputs[key] = writer.add_connection(topics.resolve(spec.name), spec.msg_type, typestore=typestore,
                                                     offered_qos_profiles=[_qos_profile(spec.qos)])
            counts = {conn.topic: 0 for conn in outputs.values()}
            core = PartSegCore(segmenter, MessageFactory(RosbagsBackend(typestore)), lambda k, m: None,
                               publish_overlay=overlay, tracking=tracking is not None, tracker_settings=tracking,
                               **depth_opts)

            def write(key: str, timestamp: int, msg: Any) -> None:
                conn = outputs[key]
                writer.write(conn, timestamp, bytes(typestore.serialize_cdr(msg, conn.msgtype)))
                counts[conn.topic] += 1

            image_times: dict[int, int] = {}  # header stamp -> bag time of images waiting for their depth

            def segment(image: Any, depth: Any = None, camera_info: Any = None) -> None:
                timestamp = image_times.pop(stamp_ns(image.header))
                for key, out in (core.process(image, depth, camera_info) or {}).items():
                    write(key, timestamp, out)

            sync = DepthFrameSync(depth_params["sync_queue_size"], depth_params["sync_slop_s"], segment) \
                if depth_opts else None
            label_info_written = False
            for conn, timestamp, raw in tqdm(reader.messages(), total=reader.message_count, unit="msg",
                                             desc="wps-sam bag", disable=None):
                writer.write(copies[conn.id], timestamp, raw)
                if conn.id not in images and conn.id not in depths and conn.id not in infos:
                    continue
                msg = typestore.deserialize_cdr(raw, modern_type_name(conn.msgtype))
                if conn.id in depths:
                    sync.add_depth(msg)
                    continue
                if conn.id in infos:
                    sync.add_camera_info(msg)
                    continue
                if not label_info_written:  # latched topic: once, before the first parts
                    write("label_info", timestamp, core.label_info_message(msg.header))
                    label_info_written = True
                image_times[stamp_ns(msg.header)] = timestamp
                if sync is None:
                    segment(msg)
                else:
                    sync.add_image(msg)
        if core.stats.rejected:
            log.warning("%d image(s) rejected; last problem: %s", core.stats.rejected, core.stats.last_problem)
        if sync is not None and image_times:
            log.warning("%d image(s) had no depth image within %g s (--sync-slop-s): not segmented", len(image_times),
                        depth_params["sync_slop_s"])
        depth_stats = core.lifter.stats if core.lifter is not None else None
        if depth_stats is not None and depth_stats.rejected_3d:
            log.warning("%d image(s) without 3D; last problem: %s", depth_stats.rejected_3d, depth_stats.last_problem)
        if core.tracking and core.tracker.resets:
            log.info("tracker reset %d time(s) (%s); the parts got new ids each time", core.tracker.resets,
                     ", ".join(f"{n} x {reason}" for reason, n in core.tracker.resets_by_reason.items() if n))
        os.replace(tmp_bag, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def _remove_stale_staging(dst: Path) -> None:
    """Delete staging folders of runs for this output that were killed (SIGKILL skips `finally`)."""
    for stale in dst.parent.glob(f".{dst.name}.*.tmp"):
        pid = stale.name[len(dst.name) + 2:].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _copy_connection(writer, conn, typestore):
    """The input connection in the output bag: same topic, definition, QoS; the type under its modern name."""
    msgtype = modern_type_name(conn.msgtype)
    msgdef = conn.msgdef.data if conn.msgdef and conn.msgdef.data else None
    digest = conn.digest or None
    if msgdef is None or digest is None:  # older bags lack definitions: take them from the typestore
        if msgtype not in typestore.fielddefs:
            in_bag = "has no type hash in the bag" if msgdef else "is defined neither in the bag"
            raise WpsSamError(f"topic {conn.topic}: type {conn.msgtype} {in_bag} nor in the built-in ROS 2 Humble "
                              f"type store; cannot copy it")
        return writer.add_connection(conn.topic, msgtype, typestore=typestore,
                                     serialization_format=conn.ext.serialization_format,
                                     offered_qos_profiles=conn.ext.offered_qos_profiles)
    return writer.add_connection(conn.topic, msgtype, msgdef=msgdef, rihs01=digest,
                                 serialization_format=conn.ext.serialization_format,
                                 offered_qos_profiles=conn.ext.offered_qos_profiles)
