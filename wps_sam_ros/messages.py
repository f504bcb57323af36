"""Output messages, built by one factory over whichever message classes the transport has.

A backend knows how to instantiate a ROS 2 type by name ("sensor_msgs/msg/Image") and how its
classes want uint8[] / float64[N] / byte fields; the factory holds the message *content* once:
  - rclpy: the real sensor_msgs / vision_msgs / diagnostic_msgs classes (RclpyBackend);
  - rosbags: dataclasses of the Humble typestore + vision_msgs from msgdefs (RosbagsBackend);
  - Cyclone DDS: IdlStruct types with ROS 2 wire names (dds.DdsBackend).
Every per-frame output copies the input header (stamp and frame_id).
"""
from __future__ import annotations

import array
import importlib
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from wps_sam_core.postprocess.objects import object_id_map

from .conversions import array_to_image_fields

if TYPE_CHECKING:
    from wps_sam_core.postprocess.geometry3d import Lifted3D
    from wps_sam_core.segmenter import PartSegmentation

# diagnostic_msgs/DiagnosticStatus levels
OK, WARN, ERROR, STALE = 0, 1, 2, 3
BACKGROUND_NAME = "background"
# sensor_msgs/PointField datatypes by numpy type code (INT8=1 UINT8=2 INT16=3 UINT16=4 INT32=5 UINT32=6 FLOAT32=7
# FLOAT64=8): PointCloud2 fields are derived from a structured dtype (geometry3d.POINT_DTYPE), never listed twice
POINT_FIELD_DATATYPES = {"i1": 1, "u1": 2, "i2": 3, "u2": 4, "i4": 5, "u4": 6, "f4": 7, "f8": 8}


def point_fields(dtype: np.dtype) -> list[tuple[str, int, int]]:
    """(name, byte offset, PointField datatype) of every field of a little-endian structured dtype."""
    fields = []
    for name, (field_dtype, offset, *_) in dtype.fields.items():
        code = f"{field_dtype.kind}{field_dtype.itemsize}"
        if code not in POINT_FIELD_DATATYPES or field_dtype.byteorder == ">" or field_dtype.shape:
            raise ValueError(f"point field {name!r}: {field_dtype} has no PointField datatype (little-endian scalars)")
        fields.append((name, offset, POINT_FIELD_DATATYPES[code]))
    return fields


class MessageBackend(Protocol):
    def new(self, type_name: str, **fields: Any) -> Any: ...
    def octets(self, data: bytes) -> Any: ...
    def float64s(self, values: Sequence[float]) -> Any: ...
    def byte(self, value: int) -> Any: ...


# ---- backends ----------------------------------------------------------------------------------
class RclpyBackend:
    """The installed ROS 2 Python message classes (needs a sourced ROS 2 environment)."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def cls(self, type_name: str) -> type:
        if type_name not in self._classes:
            pkg, _, name = type_name.split("/")
            self._classes[type_name] = getattr(importlib.import_module(f"{pkg}.msg"), name)
        return self._classes[type_name]

    def new(self, type_name: str, **fields: Any) -> Any:
        return self.cls(type_name)(**fields)

    def octets(self, data: bytes) -> Any:
        return array.array("B", data)  # rclpy's uint8[] setter takes array.array without a per-element check

    def float64s(self, values: Sequence[float]) -> Any:
        return np.asarray(values, dtype=np.float64)

    def byte(self, value: int) -> Any:
        return bytes([value])  # rclpy maps the ROS `byte` type to a 1-byte bytes object


@lru_cache(maxsize=None)
def typestore_with_vision_msgs(distro: str = "HUMBLE"):
    """rosbags' typestore of ROS 2 `distro` (HUMBLE, JAZZY, ...) plus the vision_msgs definitions of
    msgdefs (built once per distro)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from .msgdefs import VISION_MSGS

    store = get_typestore(Stores[f"ROS2_{distro}"])
    types: dict = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def ros2_typestore():
    """The Humble typestore plus vision_msgs: what bags are read and written with."""
    return typestore_with_vision_msgs("HUMBLE")


class RosbagsBackend:
    """rosbags dataclasses: what `wps-sam bag` serialises into CDR."""

    def __init__(self, typestore=None) -> None:
        self.typestore = typestore or ros2_typestore()

    def new(self, type_name: str, **fields: Any) -> Any:
        return self.typestore.types[type_name](**fields)

    def octets(self, data: bytes) -> Any:
        return np.frombuffer(data, dtype=np.uint8)

    def float64s(self, values: Sequence[float]) -> Any:
        return np.asarray(values, dtype=np.float64)

    def byte(self, value: int) -> Any:
        return int(value)


# ---- the factory -------------------------------------------------------------------------------
class MessageFactory:
    def __init__(self, backend: MessageBackend) -> None:
        self.backend = backend
        self.new = backend.new

    # -- std / builtin
    def header(self, stamp_ns: int, frame_id: str = "") -> Any:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return self.new("std_msgs/msg/Header",
                        stamp=self.new("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec), frame_id=frame_id)

    def copy_header(self, src: Any) -> Any:
        """A new header (of this backend) with the stamp and frame_id of `src` (any backend)."""
        stamp = self.new("builtin_interfaces/msg/Time", sec=int(src.stamp.sec), nanosec=int(src.stamp.nanosec))
        return self.new("std_msgs/msg/Header", stamp=stamp, frame_id=str(src.frame_id))

    # -- sensor_msgs
    def image(self, header: Any, pixels: np.ndarray, encoding: str) -> Any:
        fields = array_to_image_fields(pixels, encoding)
        fields["data"] = self.backend.octets(fields["data"])
        return self.new("sensor_msgs/msg/Image", header=header, **fields)

    def compressed_image(self, header: Any, fmt: str, data: bytes) -> Any:
        return self.new("sensor_msgs/msg/CompressedImage", header=header, format=fmt,
                        data=self.backend.octets(data))

    # -- vision_msgs
    def detections(self, header: Any, seg: PartSegmentation) -> Any:
        """One Detection2D per instance; id = str(instance id), the value in the instance map."""
        dets = [self._detection(header, inst.instance_id, inst.class_name, inst.score, inst.box_xyxy)
                for inst in seg.instances]
        return self.new("vision_msgs/msg/Detection2DArray", header=header, detections=dets)

    def objects(self, header: Any, seg: PartSegmentation) -> Any:
        """One Detection2D per object (postprocess/objects.py); id = str(object id), the value in the object map."""
        dets = [self._detection(header, obj.object_id, obj.object_class, obj.score, obj.box_xyxy)
                for obj in seg.objects]
        return self.new("vision_msgs/msg/Detection2DArray", header=header, detections=dets)

    def _detection(self, header: Any, det_id: int, class_id: str, score: float,
                   box_xyxy: tuple[float, float, float, float]) -> Any:
        x0, y0, x1, y1 = box_xyxy  # pixel edges: pixel (u, v) covers [u, u+1) x [v, v+1)
        bbox = self.new(
            "vision_msgs/msg/BoundingBox2D",
            center=self.new("vision_msgs/msg/Pose2D", theta=0.0,
                            position=self.new("vision_msgs/msg/Point2D", x=(x0 + x1) / 2, y=(y0 + y1) / 2)),
            size_x=float(x1 - x0), size_y=float(y1 - y0),
        )
        return self.new("vision_msgs/msg/Detection2D", header=self.copy_header(header),
                        results=[self._hypothesis(class_id, score)], bbox=bbox, id=str(det_id))

    def _hypothesis(self, class_id: str, score: float, position: Sequence[float] = (0.0, 0.0, 0.0)) -> Any:
        """Class and score, posed at `position` (the origin for 2D detections), shared by Detection2D and 3D."""
        return self.new("vision_msgs/msg/ObjectHypothesisWithPose",
                        hypothesis=self.new("vision_msgs/msg/ObjectHypothesis", class_id=class_id, score=float(score)),
                        pose=self._identity_pose(position))

    def _identity_pose(self, position: Sequence[float] = (0.0, 0.0, 0.0)) -> Any:
        """Identity orientation, zero covariance (vision_msgs' defaults); 2D detections have no 3D position."""
        return self.new("geometry_msgs/msg/PoseWithCovariance", pose=self._pose(position),
                        covariance=self.backend.float64s([0.0] * 36))

    def _pose(self, position: Sequence[float]) -> Any:
        x, y, z = (float(v) for v in position)
        return self.new("geometry_msgs/msg/Pose", position=self.new("geometry_msgs/msg/Point", x=x, y=y, z=z),
                        orientation=self.new("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0))

    def detections_3d(self, header: Any, lifted: Lifted3D) -> Any:
        """One Detection3D per part with valid depth: id = str(instance id) as in the 2D detections, class and
        score as there; bbox = robust centre + axis-aligned inlier extent in the optical frame (orientation
        identity); the hypothesis pose is the centre too (consumers that read results[0].pose find it)."""
        dets = []
        for part in lifted.parts:
            sx, sy, sz = (float(v) for v in part.size)
            bbox = self.new("vision_msgs/msg/BoundingBox3D", center=self._pose(part.centre),
                            size=self.new("geometry_msgs/msg/Vector3", x=sx, y=sy, z=sz))
            dets.append(self.new("vision_msgs/msg/Detection3D", header=self.copy_header(header),
                                 results=[self._hypothesis(part.class_name, part.score, part.centre)], bbox=bbox,
                                 id=str(part.instance_id)))
        return self.new("vision_msgs/msg/Detection3DArray", header=header, detections=dets)

    def point_cloud(self, header: Any, points: np.ndarray) -> Any:
        """Structured array (a little-endian dtype such as geometry3d.POINT_DTYPE) -> an unorganized PointCloud2:
        height 1, width N, fields from the dtype, is_dense true (only valid points are in it)."""
        fields = [self.new("sensor_msgs/msg/PointField", name=name, offset=offset, datatype=datatype, count=1)
                  for name, offset, datatype in point_fields(points.dtype)]
        step = points.dtype.itemsize
        return self.new("sensor_msgs/msg/PointCloud2", header=header, height=1, width=int(points.size),
                        fields=fields, is_bigendian=False, point_step=step, row_step=step * int(points.size),
                        data=self.backend.octets(np.ascontiguousarray(points).tobytes()), is_dense=True)

    def label_info(self, header: Any, class_names: Sequence[str], threshold: float) -> Any:
        """Class id -> name as used in the label map; id 0 is the background."""
        names = [BACKGROUND_NAME, *class_names]
        class_map = [self.new("vision_msgs/msg/VisionClass", class_id=k, class_name=name)
                     for k, name in enumerate(names)]
        return self.new("vision_msgs/msg/LabelInfo", header=header, class_map=class_map,
                        threshold=float(threshold))

    def part_messages_3d(self, src_header: Any, lifted: Lifted3D, points: np.ndarray | None) -> dict[str, Any]:
        """The 3D outputs (topics.OUTPUT_TOPICS keys detections_3d and, when built, points), input header copied."""
        out = {"detections_3d": self.detections_3d(self.copy_header(src_header), lifted)}
        if points is not None:
            out["points"] = self.point_cloud(self.copy_header(src_header), points)
        return out

    # -- diagnostic_msgs
    def diagnostics(self, header: Any, statuses: Iterable[tuple[int, str, str, str, Mapping[str, Any]]]) -> Any:
        """statuses: (level, name, message, hardware_id, {key: value})."""
        status_msgs = [
            self.new("diagnostic_msgs/msg/DiagnosticStatus", level=self.backend.byte(level), name=name,
                     message=message, hardware_id=hardware_id,
                     values=[self.new("diagnostic_msgs/msg/KeyValue", key=str(k), value=str(v))
                             for k, v in values.items()])
            for level, name, message, hardware_id, values in statuses
        ]
        return self.new("diagnostic_msgs/msg/DiagnosticArray", header=header, status=status_msgs)

    # -- the per-frame outputs
    def part_messages(self, src_header: Any, seg: PartSegmentation, overlay_rgb: np.ndarray | None) -> dict[str, Any]:
        """Keys are topics.OUTPUT_TOPICS keys; every message carries a copy of the input header."""
        mask_encoding = "mono8" if seg.labels.dtype == np.uint8 else "mono16"
        out = {
            "masks": self.image(self.copy_header(src_header), seg.labels, mask_encoding),
            "instance_masks": self.image(self.copy_header(src_header), seg.instance_ids.astype(np.uint16), "mono16"),
            "instances": self.detections(self.copy_header(src_header), seg),
            "object_masks": self.image(self.copy_header(src_header), object_id_map(seg.instance_ids, seg.instances),
                                       "mono16"),
            "objects": self.objects(self.copy_header(src_header), seg),
        }
        if overlay_rgb is not None:
            out["overlay"] = self.image(self.copy_header(src_header), overlay_rgb, "rgb8")
        return out
