"""Parts in 3D: part masks + an aligned depth image + the pinhole K -> one robust 3D centre per part and a
labelled point cloud. numpy only (no torch, no ROS), so the node, the bag tool and offline users share it.

Conventions (those of ROS `sensor_msgs/CameraInfo` and OpenCV):
- Camera optical frame: x right, y down, z forward, metres.
- Pixel (u, v) = (column, row) index; the *centre* of pixel (u, v) is at image coordinate (u, v), so
  a point at depth z seen at pixel (u, v) is x = (u - cx) z / fx, y = (v - cy) z / fy (K = CameraInfo.k).
- K is the intrinsic matrix of the depth image, which is aligned (registered) to the colour image: every
  depth pixel (u, v) belongs to colour pixel (u, v), e.g. RealSense `aligned_depth_to_color`.
- Depth: metres = value * depth_scale (16UC1 millimetres: 0.001; 32FC1 metres: 1.0). Values that are
  0, negative, NaN or +-inf carry no depth (drivers write 0 or NaN where the sensor has no return).

Robust centre of a part (also the world's ground truth, data/world_depth.py): the median depth z_med of
the part's valid pixels and their median absolute deviation MAD; inliers are the points with
|z - z_med| <= max(INLIER_MADS * 1.4826 * MAD, INLIER_FLOOR_M); the centre is the mean of the inlier
points and the size their axis-aligned extent. Mask-border pixels that see the background (metres
behind) or a foreground edge are rejected while fewer than half of the part's pixels are such outliers.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import WpsSamError

if TYPE_CHECKING:  # the segmenter module needs torch; only its data layout is used here
    from ..segmenter import PartSegmentation

INLIER_MADS = 3.0  # a Gaussian's 3 sigma (1.4826 MAD = sigma)
INLIER_FLOOR_M = 0.005  # the band never shrinks below +-5 mm (a flat, noise-free part has MAD 0)
MAD_TO_SIGMA = 1.4826

# The PointCloud2 layout, the one source of truth (the ROS side builds its PointFields from this dtype).
# rgb: the packed float RViz expects (0x00RRGGBB bits reinterpreted as float32). 20 bytes/point, no padding.
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"),
                        ("label", "<u2"), ("instance", "<u2")])


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the image the depth is aligned to (ROS CameraInfo K, width, height)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value) or value <= 0:
                raise WpsSamError(f"camera intrinsics: focal length {name} must be a finite number > 0, got {value!r}")
        for name in ("cx", "cy"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
                raise WpsSamError(f"camera intrinsics: principal point {name} must be a finite number, got {value!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise WpsSamError(f"camera intrinsics: {name} must be an integer >= 1, got {value!r}")

    @classmethod
    def from_matrix(cls, K: Any, width: int, height: int) -> "CameraIntrinsics":
        """K: 3x3, or 9 values row-major like CameraInfo.k. Skew (K[0][1]) is ignored, as ROS drivers set it 0."""
        try:
            k = np.asarray(K, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise WpsSamError(f"camera intrinsics: K must be 9 numbers, got {K!r}") from None
        if k.size != 9:
            raise WpsSamError(f"camera intrinsics: K must be 3x3 (9 values, row-major), got {k.size} values")
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), _as_int(width), _as_int(height))

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> "CameraIntrinsics":
        """The intrinsics of this image resized to width x height (pixel centres map onto pixel centres:
        u' + 0.5 = (u + 0.5) * width / self.width)."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                                _as_int(width), _as_int(height))


Intrinsics = CameraIntrinsics | np.ndarray | Sequence[float]  # or a 3x3 K, row-major like CameraInfo.k


def as_intrinsics(intrinsics: Intrinsics, depth: np.ndarray, image_shape: tuple[int, int]) -> CameraIntrinsics:
    """A CameraIntrinsics as it is; a K (3x3 array or 9 values, row-major like CameraInfo.k) with the depth
    image's width and height (those of `image_shape` when the depth is no HxW image: _check_inputs names it)."""
    if isinstance(intrinsics, CameraIntrinsics):
        return intrinsics
    height, width = np.shape(depth) if np.ndim(depth) == 2 else image_shape
    return CameraIntrinsics.from_matrix(intrinsics, width, height)


@dataclass(frozen=True)
class Part3D:
    instance_id: int  # the 2D instance id (a track id when tracking)
    class_id: int
    class_name: str
    score: float
    centre: tuple[float, float, float]  # metres, camera optical frame: x right, y down, z forward
    size: tuple[float, float, float]  # axis-aligned extent (optical frame) of the inlier points, metres
    n_points: int  # valid depth pixels of the part used (inliers)

    def to_json(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "class_id": self.class_id, "class_name": self.class_name,
                "score": round(self.score, 6), "centre_m": [round(v, 5) for v in self.centre],
                "size_m": [round(v, 5) for v in self.size], "n_points": self.n_points}


@dataclass
class Lifted3D:
    parts: list[Part3D]  # parts with at least one valid depth pixel, in result.instances order
    no_depth: list[int]  # instance ids of parts with no valid depth pixel

    def to_json(self) -> dict[str, Any]:
        return {"parts": [p.to_json() for p in self.parts], "no_depth": list(self.no_depth)}


def lift_to_3d(result: "PartSegmentation", depth: np.ndarray, intrinsics: Intrinsics,
               depth_scale: float = 1.0) -> Lifted3D:
    """One robust 3D centre (module docstring) per part instance of `result`, from the depth image aligned
    to it; `intrinsics`: a CameraIntrinsics or K (as_intrinsics). One pass over the instance map: the valid
    part pixels are grouped by instance (a radix sort of the instance index), then each part's median and
    MAD come from linear-time partitions."""
    intrinsics = as_intrinsics(intrinsics, depth, result.labels.shape)
    instances = result.instances
    centre, size, n_in = instance_centres(result.instance_ids, [inst.instance_id for inst in instances], depth,
                                          intrinsics, depth_scale)
    parts, no_depth = [], []
    for i, inst in enumerate(instances):
        if n_in[i] == 0:
            no_depth.append(inst.instance_id)
            continue
        parts.append(Part3D(inst.instance_id, inst.class_id, inst.class_name, float(inst.score),
                            tuple(float(v) for v in centre[i]), tuple(float(v) for v in size[i]), int(n_in[i])))
    return Lifted3D(parts, no_depth)


def instance_centres(instance_map: np.ndarray, ids: Sequence[int], depth: np.ndarray, intrinsics: CameraIntrinsics,
                     depth_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The robust centre (N x 3), inlier extent (N x 3) and inlier count (N) of the pixels of each of the N
    `ids` in `instance_map` (integer HxW); count 0 (and zeros) where an id has no valid depth. lift_to_3d's
    arithmetic, also used for the world's ground truth on its annotation maps."""
    _check_inputs(instance_map, depth, intrinsics, depth_scale)
    ids = np.asarray(ids, np.int64).reshape(-1)
    pix, z = _valid_part_pixels(instance_map, depth, depth_scale)
    values = instance_map.reshape(-1)[pix].astype(np.int64)
    lut = np.full(max(int(ids.max(initial=0)), 0) + 2, -1, np.int32)  # map value -> position in ids; last: others
    lut[ids[ids >= 0]] = np.flatnonzero(ids >= 0)
    index = lut[np.clip(values, 0, lut.size - 1)]
    keep = index >= 0  # a map value no id claims is not a part
    pix, z, index = pix[keep], z[keep], index[keep]
    order = np.argsort(index.astype(np.int16 if ids.size < 32768 else np.int32), kind="stable")  # radix sort
    points = _back_project(pix[order], z[order], intrinsics)
    bounds = np.concatenate(([0], np.cumsum(np.bincount(index, minlength=ids.size))))
    centre, size, n_in = np.zeros((ids.size, 3)), np.zeros((ids.size, 3)), np.zeros(ids.size, np.int64)
    for i in np.flatnonzero(bounds[1:] > bounds[:-1]):  # per part: linear-time partitions, no sort
        centre[i], size[i], n_in[i] = _robust_centre(points[:, bounds[i]: bounds[i + 1]])
    return centre, size, n_in


def part_points(result: "PartSegmentation", depth: np.ndarray, intrinsics: Intrinsics,
                depth_scale: float = 1.0, rgb: np.ndarray | None = None) -> np.ndarray:
    """The part pixels (label > 0) with valid depth, back-projected: an unorganized cloud (structured array
    of POINT_DTYPE) in row-major pixel order. All valid pixels, outliers included (lift_to_3d's centre
    rejects them; a viewer should see what the sensor saw). instance 0 = a part pixel without an instance
    (an unconfirmed track). `intrinsics`: a CameraIntrinsics or K (as_intrinsics). rgb: HxWx3 uint8 image
    colours; None = the class colour (viz.palette)."""
    labels = result.labels
    intrinsics = as_intrinsics(intrinsics, depth, labels.shape)
    _check_inputs(labels, depth, intrinsics, depth_scale)
    pix, z = _valid_part_pixels(labels, depth, depth_scale)
    cloud = np.empty(pix.size, POINT_DTYPE)
    cloud["x"], cloud["y"], cloud["z"] = _back_project(pix, z, intrinsics)
    cloud["label"] = labels.reshape(-1)[pix]
    cloud["instance"] = result.instance_ids.reshape(-1)[pix]
    if rgb is None:
        from ..viz import palette  # cv2; imported here so the module loads with numpy alone

        colours = palette(len(result.class_names))[np.minimum(cloud["label"], len(result.class_names))]
    else:
        rgb = np.asarray(rgb)
        if rgb.shape != (*labels.shape, 3) or rgb.dtype != np.uint8:
            raise WpsSamError(f"rgb must be {labels.shape[0]}x{labels.shape[1]}x3 uint8 like the image, "
                              f"got {rgb.shape} {rgb.dtype}")
        colours = rgb.reshape(-1, 3)[pix]
    cloud["rgb"] = pack_rgb(colours)
    return cloud


def pack_rgb(colours: np.ndarray) -> np.ndarray:
    """N x 3 uint8 -> N float32 whose bits are 0x00RRGGBB (PointCloud2's `rgb` field as RViz reads it)."""
    c = colours.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def _check_inputs(part_map: np.ndarray, depth: np.ndarray, intrinsics: CameraIntrinsics, depth_scale: float) -> None:
    if not isinstance(intrinsics, CameraIntrinsics):
        raise WpsSamError(f"intrinsics must be a CameraIntrinsics, got {type(intrinsics).__name__}")
    if isinstance(depth_scale, bool) or not isinstance(depth_scale, Real) or not np.isfinite(depth_scale) \
            or depth_scale <= 0:
        raise WpsSamError(f"depth_scale must be a finite number > 0 (metres per depth unit), got {depth_scale!r}")
    depth = np.asarray(depth)
    if depth.dtype.kind not in "uif":
        raise WpsSamError(f"depth must be a numeric image (16UC1 millimetres or 32FC1 metres), got dtype {depth.dtype}")
    if depth.shape != part_map.shape:
        raise WpsSamError(f"depth size {_size(depth.shape)} does not match the image size {_size(part_map.shape)}"
                          " (align the depth to the colour image, or resize it with nearest neighbour)")
    if (intrinsics.height, intrinsics.width) != part_map.shape:
        raise WpsSamError(f"camera intrinsics are for {intrinsics.width}x{intrinsics.height}, the image is "
                          f"{_size(part_map.shape)} (CameraInfo of another image? use CameraIntrinsics.scaled)")


def _valid_part_pixels(part_map: np.ndarray, depth: np.ndarray, depth_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the pixels with part_map != 0 and a valid depth, and that depth in metres (float64)."""
    pix = np.flatnonzero(part_map)
    z = np.asarray(depth).reshape(-1)[pix].astype(np.float64) * depth_scale
    valid = np.isfinite(z) & (z > 0)
    return pix[valid], z[valid]


def _back_project(pix: np.ndarray, z: np.ndarray, k: CameraIntrinsics) -> np.ndarray:
    """3 x N (x, y, z) rows: reductions over points then run along contiguous memory."""
    v, u = np.divmod(pix, k.width)
    return np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z])


def _robust_centre(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and extent of the inliers of one part's 3 x N points (module docstring), and their count."""
    z = points[2]
    dev = np.abs(z - _median(z))
    band = max(INLIER_MADS * MAD_TO_SIGMA * _median(dev), INLIER_FLOOR_M)
    inliers = np.compress(dev <= band, points, axis=1)  # at least half of the points: median(dev) <= band
    return inliers.sum(1) / inliers.shape[1], inliers.max(1) - inliers.min(1), inliers.shape[1]


def _median(values: np.ndarray) -> float:
    """np.median without its NaN checks (values are finite): one partition, linear time."""
    lo, hi = (values.size - 1) // 2, values.size // 2
    part = np.partition(values, (lo, hi))
    return 0.5 * (float(part[lo]) + float(part[hi]))


def _as_int(value: Any) -> Any:
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value


def _size(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape[::-1]) if len(shape) == 2 else str(tuple(shape))
