"""The one source of truth for the node's topics, QoS choices and parameters (name, default, meaning).

config/part_seg.yaml, launch/part_seg.launch.py, the rclpy node, the DDS transport, the bag tool and
the README table all read or are tested against this module, so they cannot drift apart.
Pure Python on purpose: the launch file imports it, and importing torch or rclpy here would slow or
break `ros2 launch`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NODE_NAME = "part_seg"
PACKAGE = "wps_sam_ros"
EXECUTABLE = "part_seg_node"
CONFIG_FILE = "part_seg.yaml"  # config/ in the repo, share/wps_sam_ros/config/ when installed
LAUNCH_FILE = "part_seg.launch.py"  # launch/ in the repo, share/wps_sam_ros/launch/ when installed


@dataclass(frozen=True)
class QosSpec:
    """Middleware-neutral QoS; node.py maps it to rclpy QoSProfile, dds.py to Cyclone policies."""

    reliability: str  # "reliable" | "best_effort"
    durability: str  # "volatile" | "transient_local"
    depth: int  # KEEP_LAST depth


# rclpy's qos_profile_sensor_data: best effort, keep last 5, volatile.
SENSOR_DATA_QOS = QosSpec("best_effort", "volatile", 5)
RELIABLE_QOS = QosSpec("reliable", "volatile", 10)
# Latched: a late subscriber still gets the last message (needs transient_local on its side too).
LATCHED_QOS = QosSpec("reliable", "transient_local", 1)
# Outputs are reliable so both reliable and best-effort subscribers match; a short depth keeps a slow
# subscriber from receiving stale frames.
OUTPUT_QOS = QosSpec("reliable", "volatile", 5)
INPUT_QOS_CHOICES = {"sensor_data": SENSOR_DATA_QOS, "reliable": RELIABLE_QOS}


@dataclass(frozen=True)
class TopicSpec:
    name: str  # relative names resolve inside the node's namespace; "/..." names are absolute
    msg_type: str  # ROS 2 type name, pkg/msg/Type
    qos: QosSpec
    description: str


# Keys are what the node core produces; order is the README table order.
OUTPUT_TOPICS: dict[str, TopicSpec] = {
    "masks": TopicSpec(
        "parts/masks", "sensor_msgs/msg/Image", OUTPUT_QOS,
        "label map, mono8 (mono16 past 255 classes): 0 = background, k = class k of label_info"),
    "instance_masks": TopicSpec(
        "parts/instance_masks", "sensor_msgs/msg/Image", OUTPUT_QOS,
        "instance map, mono16: 0 = none, i = the detection whose id is \"i\" (a track id with tracking: true)"),
    "instances": TopicSpec(
        "parts/instances", "vision_msgs/msg/Detection2DArray", OUTPUT_QOS,
        "one Detection2D per instance: id = str(i), class_id = class name, score, bbox in pixels"),
    "object_masks": TopicSpec(
        "parts/object_masks", "sensor_msgs/msg/Image", OUTPUT_QOS,
        "object map, mono16, pixel-aligned with instance_masks: 0 = none, o = the object whose id is \"o\" in "
        "objects (the part at a pixel belongs to that object)"),
    "objects": TopicSpec(
        "parts/objects", "vision_msgs/msg/Detection2DArray", OUTPUT_QOS,
        "one Detection2D per object: id = str(o) (its lowest part id), class_id = object class, score = best part's, "
        "bbox = union of its parts' boxes"),
    "label_info": TopicSpec(
        "parts/label_info", "vision_msgs/msg/LabelInfo", LATCHED_QOS,
        "class id -> class name (0 = background), threshold = score_threshold; transient-local"),
    "overlay": TopicSpec(
        "parts/overlay", "sensor_msgs/msg/Image", OUTPUT_QOS,
        "rgb8 image with parts blended in and a legend panel on the right; built only while subscribed"),
    "detections_3d": TopicSpec(
        "parts/detections_3d", "vision_msgs/msg/Detection3DArray", OUTPUT_QOS,
        "with depth_topic: one Detection3D per part with valid depth, id as in instances; bbox centre = robust "
        "part centre, size = inlier extent, metres, camera optical frame (the image's frame_id)"),
    "points": TopicSpec(
        "parts/points", "sensor_msgs/msg/PointCloud2", OUTPUT_QOS,
        "with depth_topic: the part pixels back-projected, unorganized (height 1), fields x y z rgb label "
        "instance; built only while subscribed"),
    "diagnostics": TopicSpec(
        "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", RELIABLE_QOS,
        "inference ms, latency from header.stamp, fps, received/processed/dropped/rejected frames, device"),
}

DEPTH_OUTPUTS = ("detections_3d", "points")  # published only with a depth_topic


def advertised_outputs(depth_topic: str) -> tuple[str, ...]:
    """OUTPUT_TOPICS keys a node advertises: without a depth_topic (2D only) no 3D topic is advertised."""
    return tuple(key for key in OUTPUT_TOPICS if depth_topic or key not in DEPTH_OUTPUTS)

RAW_IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
COMPRESSED_SUFFIX = "/compressed"  # image_transport's convention: <image_topic>/compressed
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"  # depth_topic carries RAW_IMAGE_TYPE (never compressed)

DEVICE_CHOICES = ("auto", "cuda", "cpu")
PRECISION_CHOICES = ("fp32", "bf16", "fp16")
BACKEND_CHOICES = ("torch", "onnxruntime")  # = wps_sam_core.backends.BACKENDS (torch-free copy; tested)
OVERLAP_CHOICES = ("smaller_on_top", "score")  # = wps_sam_core.segmenter.OVERLAP_ORDERS (torch-free copy; tested)
IMAGE_TRANSPORT_CHOICES = ("raw", "compressed")


@dataclass(frozen=True)
class ParameterSpec:
    default: Any  # its type is the parameter's type (an int is accepted for a float, as rcl YAML gives 1 for 1.0)
    description: str
    runtime: bool = False  # may change while running (set-parameters callback); else needs a restart
    choices: tuple[str, ...] = ()
    pattern: str = ""  # regular expression of values accepted besides `choices` (device: cuda:N)
    bounds: tuple[float, float] | None = None  # inclusive [low, high]; also the ROS descriptor's range

    @property
    def closed_choices(self) -> tuple[str, ...]:
        """Choices a launch argument can enforce: none when a pattern admits more values."""
        return () if self.pattern else self.choices


PARAMETERS: dict[str, ParameterSpec] = {
    "image_topic": ParameterSpec("/camera/image_raw", "input sensor_msgs/Image topic"),
    "image_transport": ParameterSpec(
        "raw", "raw: Image on image_topic; compressed: CompressedImage on image_topic + '/compressed'",
        choices=IMAGE_TRANSPORT_CHOICES),
    "input_qos": ParameterSpec(
        "sensor_data", "sensor_data (best effort, depth 5) or reliable (depth 10) input subscription",
        choices=tuple(INPUT_QOS_CHOICES)),
    "sam_type": ParameterSpec("", "SAM type (vit_b, vit_l, vit_h, tiny, ...); empty = the prompter's"),
    "sam_checkpoint": ParameterSpec("", "official SAM checkpoint file, needed with a prompter ('random' = random "
                                    "weights, tests only); empty without a prompter = embedded model"),
    "prompter_checkpoint": ParameterSpec("", "prompter checkpoint (.safetensors); empty = the embedded default model"),
    "device": ParameterSpec("auto", "auto (cuda if available), cuda, cuda:N or cpu", choices=DEVICE_CHOICES,
                            pattern=r"cuda:\d+"),
    "precision": ParameterSpec("fp32", "fp32, bf16 or fp16 (half precisions need a GPU)", choices=PRECISION_CHOICES),
    "backend": ParameterSpec("torch", "what runs the model: torch, or onnxruntime on exported ONNX graphs",
                             choices=BACKEND_CHOICES),
    "onnx_dir": ParameterSpec("", "onnxruntime: a folder from wps-sam export --onnx; empty = the model exported on "
                              "first use into $WPS_SAM_CACHE_DIR (default ~/.cache/wps_sam)/onnx"),
    "onnx_providers": ParameterSpec("", "onnxruntime execution providers by preference, e.g. cuda,cpu; empty = "
                                    "tensorrt, cuda, cpu (the first one installed runs)"),
    "onnx_threads": ParameterSpec(0, "onnxruntime intra-op threads per graph; 0 = one per physical core [0, 1024]",
                                  bounds=(0, 1024)),
    "score_threshold": ParameterSpec(0.5, "keep parts whose class probability is at least this [0, 1]", runtime=True,
                                     bounds=(0.0, 1.0)),
    "mask_threshold": ParameterSpec(0.0, "SAM mask logit threshold", runtime=True),
    "max_instances": ParameterSpec(25, "at most this many parts per frame [1, 65535]", runtime=True,
                                   bounds=(1, 65535)),
    "class_filter": ParameterSpec("", "comma-separated class names to keep; empty = all classes", runtime=True),
    "overlap": ParameterSpec(OVERLAP_CHOICES[0], "who keeps overlapping pixels: smaller_on_top (nested parts stay "
                             "visible) or score", runtime=True, choices=OVERLAP_CHOICES),
    "dedup_iou": ParameterSpec(0.35, "one part, one instance: same-class masks overlapping more than this mask IoU "
                               "are merged into the best-scored one [0, 1]; 0 = off", runtime=True, bounds=(0.0, 1.0)),
    "publish_overlay": ParameterSpec(True, "publish parts/overlay (only built while someone subscribes)", runtime=True),
    # above 0: rcl's timer with period 0 is always ready (a busy loop flooding /diagnostics)
    "diagnostics_period": ParameterSpec(1.0, "seconds between /diagnostics messages [0.01, 3600]",
                                        bounds=(0.01, 3600.0)),
    # parts in 3D (wps_sam_core.postprocess.geometry3d): an aligned depth image + its CameraInfo
    "depth_topic": ParameterSpec("", "aligned depth sensor_msgs/Image (16UC1 mm or 32FC1 m), synchronised with the "
                                 "image; empty = 2D only"),
    "camera_info_topic": ParameterSpec("", "CameraInfo (K) of the depth image; empty = camera_info next to "
                                       "depth_topic (image_transport's rule)"),
    "sync_slop_s": ParameterSpec(0.02, "image and depth pair when their stamps are less than this apart (s; "
                                 "message_filters ApproximateTimeSynchronizer slop) [0.0001, 10]",
                                 bounds=(0.0001, 10.0)),
    "sync_queue_size": ParameterSpec(10, "messages per input the synchroniser keeps while waiting for a partner "
                                     "[1, 1000]", bounds=(1, 1000)),
    "depth_scale_to_image": ParameterSpec(False, "a depth image of another size is resized to the image's with "
                                          "nearest neighbour (K scaled); false: such frames get no 3D"),
    "publish_points": ParameterSpec(True, "publish parts/points (only built while someone subscribes)", runtime=True),
    # tracking (wps_sam_core.postprocess.tracking; defaults = TrackerSettings()'s, tested)
    "tracking": ParameterSpec(False, "instance ids become track ids, stable over frames; parts without a confirmed "
                              "track are left out of instances and instance_masks; switching on starts afresh",
                              runtime=True),
    "track_match_iou": ParameterSpec(0.5, "least mask IoU of a part with a track's predicted mask to keep its id "
                                     "[0.01, 1]", runtime=True, bounds=(0.01, 1.0)),
    "track_max_age": ParameterSpec(10, "frames a track keeps its id while its part is not seen [0, 10000]",
                                   runtime=True, bounds=(0, 10000)),
    "track_min_hits": ParameterSpec(1, "frames in a row a new part must be seen before it gets an id [1, 1000]",
                                    runtime=True, bounds=(1, 1000)),
    "track_reset_s": ParameterSpec(5.0, "a gap between frames longer than this (s) resets the tracker, as a "
                                   "stamp going backwards does; 0 = never [0, 3600]", runtime=True,
                                   bounds=(0.0, 3600.0)),
}

RUNTIME_PARAMETERS = tuple(name for name, spec in PARAMETERS.items() if spec.runtime)


@dataclass(frozen=True)
class LaunchArgument:
    default: str
    description: str
    choices: tuple[str, ...] = ()


# Launch arguments named like a parameter override it when non-empty; empty keeps the params_file
# value, so editing the YAML is never silently undone by a launch default.
PARAMETER_ARGUMENTS = ("image_topic", "image_transport", "input_qos", "sam_checkpoint", "prompter_checkpoint",
                       "device", "backend", "onnx_dir", "depth_topic", "camera_info_topic")
LAUNCH_ARGUMENTS: dict[str, LaunchArgument] = {
    # the launch file turns this default into PathJoinSubstitution([FindPackageShare(PACKAGE), ...])
    "params_file": LaunchArgument(f"$(find-pkg-share {PACKAGE})/config/{CONFIG_FILE}", "node parameters YAML"),
    **{name: LaunchArgument(
        "", f"sets the {name} parameter; empty = the params_file value (shipped: {PARAMETERS[name].default!r})",
        ("", *PARAMETERS[name].closed_choices) if PARAMETERS[name].closed_choices else ())
       for name in PARAMETER_ARGUMENTS},
    # rclpy's own parameter (the node's clock): empty keeps the params_file value
    "use_sim_time": LaunchArgument("", "use /clock (simulation or bag playback time); empty = the params_file value",
                                   ("", "true", "false")),
    "namespace": LaunchArgument("", "node namespace: outputs become /<namespace>/parts/..."),
    "use_lifecycle": LaunchArgument("false", "run the managed (lifecycle) node", ("true", "false")),
    "autostart": LaunchArgument("true", "lifecycle node only: configure and activate at launch", ("true", "false")),
}


def defaults() -> dict[str, Any]:
    return {name: spec.default for name, spec in PARAMETERS.items()}


def parse_class_filter(value: str) -> tuple[str, ...]:
    """'a, b' -> ('a', 'b'); '' -> () (all classes)."""
    return tuple(name.strip() for name in str(value).split(",") if name.strip())


def resolve(name: str, namespace: str = "") -> str:
    """ROS 2 name resolution for plain names: relative names go under the namespace."""
    if name.startswith("/"):
        return name
    namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{namespace}/{name}"


def input_topic(image_topic: str, image_transport: str) -> tuple[str, str]:
    """(topic, message type) the node subscribes to."""
    if image_transport == "compressed":
        return image_topic.rstrip("/") + COMPRESSED_SUFFIX, COMPRESSED_IMAGE_TYPE
    return image_topic, RAW_IMAGE_TYPE


CAMERA_INFO_NAME = "camera_info"


def camera_info_topic(depth_topic: str, camera_info_topic: str = "") -> str:
    """The CameraInfo topic of a depth image: the parameter when set, else image_transport's rule (the last name
    token replaced by camera_info): /camera/aligned_depth_to_color/image_raw -> .../aligned_depth_to_color/camera_info."""
    if camera_info_topic:
        return camera_info_topic
    head, _, _ = depth_topic.rstrip("/").rpartition("/")
    return f"{head}/{CAMERA_INFO_NAME}" if head or depth_topic.startswith("/") else CAMERA_INFO_NAME
