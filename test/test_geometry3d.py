"""lift_to_3d / part_points against hand-computed back-projection, a per-part reference, and bad inputs."""
from __future__ import annotations

import numpy as np
import pytest

from wps_sam_core.errors import WpsSamError
from wps_sam_core.postprocess.geometry3d import (
    POINT_DTYPE, CameraIntrinsics, lift_to_3d, part_points, pack_rgb,
)
from wps_sam_core.postprocess.tracking import with_track_ids
from wps_sam_core.segmenter import assemble

H, W = 48, 64
K = CameraIntrinsics(fx=500.0, fy=520.0, cx=31.5, cy=23.7, width=W, height=H)
NAMES = ["mug_body", "mug_handle"]


def segmentation(*masks: np.ndarray, class_ids=None):
    masks = np.stack(masks)
    n = len(masks)
    class_ids = np.array(class_ids or [1 + i % 2 for i in range(n)])
    return assemble(masks, class_ids, np.linspace(0.9, 0.5, n), np.ones(n), NAMES)


def box_mask(r0, r1, c0, c1, shape=(H, W)):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def reference_centre(us, vs, z, k: CameraIntrinsics):
    """The documented definition written plainly for one part: median/MAD band, mean of the inliers."""
    med = np.median(z)
    band = max(3.0 * 1.4826 * np.median(np.abs(z - med)), 0.005)
    keep = np.abs(z - med) <= band
    pts = np.stack([(us - k.cx) * z / k.fx, (vs - k.cy) * z / k.fy, z], 1)[keep]
    return pts.mean(0), pts.max(0) - pts.min(0), int(keep.sum())


def test_flat_square_at_one_metre_matches_hand_computed_back_projection():
    seg = segmentation(box_mask(10, 20, 20, 30))  # columns 20..29, rows 10..19
    depth = np.zeros((H, W), np.float32)
    depth[10:20, 20:30] = 1.0
    part, = lift_to_3d(seg, depth, K).parts
    assert part.centre[2] == pytest.approx(1.000, abs=1e-6)
    # pixel (u, v) centres sit at integer coordinates (ROS/OpenCV): mean u = 24.5, mean v = 14.5
    assert part.centre[0] == pytest.approx((24.5 - 31.5) / 500.0, abs=1e-12)
    assert part.centre[1] == pytest.approx((14.5 - 23.7) / 520.0, abs=1e-12)
    assert part.size == pytest.approx((9 / 500.0, 9 / 520.0, 0.0), abs=1e-12)
    assert part.n_points == 100 and part.instance_id == 1 and part.class_name == "mug_body"


@pytest.mark.parametrize("outlier_m", [5.0, 0.1])
def test_border_outliers_do_not_move_the_centre(outlier_m):
    """20% of the mask (its outermost pixels, where depth sees background or an edge) is wrong."""
    mask = box_mask(4, 44, 10, 50)
    rows, cols = np.nonzero(mask)
    yy, xx = np.mgrid[0:H, 0:W]
    clean = (0.9 + 0.002 * xx + 0.001 * yy).astype(np.float32)  # a tilted plane around 1 m
    seg = segmentation(mask)
    truth = lift_to_3d(seg, clean, K).parts[0].centre
    border = np.maximum(np.abs(rows - 23.5), np.abs(cols - 29.5))
    worst = np.argsort(-border, kind="stable")[: int(0.2 * rows.size)]
    noisy = clean.copy()
    noisy[rows[worst], cols[worst]] = outlier_m
    moved = np.subtract(lift_to_3d(seg, noisy, K).parts[0].centre, truth)
    assert np.linalg.norm(moved) < 0.01
    naive = np.array([(cols - K.cx) * noisy[mask] / K.fx, (rows - K.cy) * noisy[mask] / K.fy, noisy[mask]]).mean(1)
    assert np.linalg.norm(naive - truth) > 0.05  # the plain mean would have moved: the test has teeth


def test_16uc1_millimetres_and_32fc1_metres_agree():
    rng = np.random.default_rng(0)
    depth_mm = rng.integers(400, 3000, size=(H, W)).astype(np.uint16)
    seg = segmentation(box_mask(5, 30, 5, 40), box_mask(20, 45, 30, 60))
    a = lift_to_3d(seg, depth_mm, K, depth_scale=0.001)
    b = lift_to_3d(seg, depth_mm.astype(np.float32) / 1000.0, K, depth_scale=1.0)
    assert len(a.parts) == len(b.parts) == 2
    for pa, pb in zip(a.parts, b.parts):
        assert np.allclose(pa.centre, pb.centre, atol=1e-6) and np.allclose(pa.size, pb.size, atol=1e-6)
        assert pa.n_points == pb.n_points


def test_zero_nan_inf_and_negative_carry_no_depth():
    mask = box_mask(10, 30, 10, 40)
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.8, 1.2, (H, W)).astype(np.float32)
    holes = np.zeros((H, W), bool)
    holes[12, 10:40:3] = True
    holes[20:25, 15] = True
    holes[28, 30:35] = True
    holes[27, 11] = True
    depth[12, 10:40:3], depth[20:25, 15], depth[28, 30:35], depth[27, 11] = 0, np.nan, np.inf, -1.0
    with_holes = lift_to_3d(segmentation(mask), depth, K).parts[0]
    without = lift_to_3d(segmentation(mask & ~holes), depth, K).parts[0]
    assert with_holes.centre == pytest.approx(without.centre, abs=1e-12)
    assert with_holes.n_points == without.n_points < mask.sum() - holes.sum() + 1
    cloud = part_points(segmentation(mask), depth, K)
    assert cloud.size == (mask & ~holes).sum() and np.isfinite(cloud["z"]).all()


def test_a_part_without_valid_depth_is_listed_in_no_depth():
    seg = segmentation(box_mask(5, 15, 5, 15), box_mask(20, 30, 20, 30))
    depth = np.full((H, W), np.nan, np.float32)
    depth[5:15, 5:15] = 2.0
    lifted = lift_to_3d(seg, depth, K)
    assert [p.instance_id for p in lifted.parts] == [1] and lifted.no_depth == [2]
    assert lifted.to_json()["no_depth"] == [2]


def test_matches_the_per_part_reference_on_random_scenes_and_track_ids():
    rng = np.random.default_rng(2)
    masks = [box_mask(*sorted(rng.integers(0, H, 2) + [0, 3]), *sorted(rng.integers(0, W, 2) + [0, 3]))
             for _ in range(6)]
    seg = with_track_ids(segmentation(*masks), [7, 42, 0, 3, 65535, 9])  # one unconfirmed (0), a big id
    depth = rng.uniform(0.4, 3.0, (H, W)).astype(np.float32)
    depth[rng.random((H, W)) < 0.1] = 0
    lifted = lift_to_3d(seg, depth, K)
    got = {p.instance_id: p for p in lifted.parts}
    assert set(got) | set(lifted.no_depth) == {inst.instance_id for inst in seg.instances}
    for inst in seg.instances:
        rows, cols = np.nonzero((seg.instance_ids == inst.instance_id) & (depth > 0))
        if rows.size == 0:
            assert inst.instance_id in lifted.no_depth
            continue
        centre, size, n = reference_centre(cols, rows, depth[rows, cols].astype(np.float64), K)
        part = got[inst.instance_id]
        assert np.allclose(part.centre, centre, atol=1e-9) and np.allclose(part.size, size, atol=1e-9)
        assert part.n_points == n and part.class_id == inst.class_id


def test_part_points_layout_values_and_colours():
    assert POINT_DTYPE.itemsize == 20 and POINT_DTYPE.names == ("x", "y", "z", "rgb", "label", "instance")
    seg = segmentation(box_mask(10, 12, 20, 23), box_mask(30, 31, 5, 7))
    depth = np.zeros((H, W), np.uint16)
    depth[10:12, 20:23] = 1500
    depth[30, 5:7] = 800
    cloud = part_points(seg, depth, K, depth_scale=0.001)
    assert cloud.dtype == POINT_DTYPE and cloud.size == 8
    first = cloud[0]  # row-major: pixel (u=20, v=10)
    assert first["z"] == pytest.approx(1.5) and first["x"] == pytest.approx((20 - 31.5) * 1.5 / 500, rel=1e-6)
    assert first["y"] == pytest.approx((10 - 23.7) * 1.5 / 520, rel=1e-6)
    assert list(cloud["label"]) == [1] * 6 + [2] * 2 and list(cloud["instance"]) == [1] * 6 + [2] * 2
    image = np.zeros((H, W, 3), np.uint8)
    image[10, 20] = (255, 128, 1)
    bits = part_points(seg, depth, K, 0.001, rgb=image)["rgb"].view(np.uint32)
    assert bits[0] == 0x00FF8001 and bits[1] == 0
    assert pack_rgb(np.array([[1, 2, 3]], np.uint8)).view(np.uint32)[0] == 0x010203


def test_from_matrix_and_scaled_follow_camera_info():
    k = CameraIntrinsics.from_matrix([500, 0, 31.5, 0, 520, 23.7, 0, 0, 1], W, H)
    assert k == K and np.allclose(CameraIntrinsics.from_matrix(K.matrix(), W, H).matrix(), K.matrix())
    big = K.scaled(2 * W, 2 * H)  # a 3D point's pixel centre u maps to 2u + 0.5 at twice the resolution
    x, y, z = 0.1, -0.05, 1.2
    u, v = K.fx * x / z + K.cx, K.fy * y / z + K.cy
    assert big.fx * x / z + big.cx == pytest.approx(2 * u + 0.5)
    assert big.fy * y / z + big.cy == pytest.approx(2 * v + 0.5)


@pytest.mark.parametrize("k", [K.matrix(), list(K.matrix().reshape(-1)), tuple(K.matrix().reshape(-1))],
                         ids=["3x3-array", "9-values-list", "9-values-tuple"])
def test_a_k_matrix_gives_exactly_what_its_camera_intrinsics_give(k):
    """lift_to_3d(result, depth, K, depth_scale) as CameraInfo.k gives it: width and height from the depth."""
    rng = np.random.default_rng(5)
    seg = segmentation(box_mask(3, 20, 4, 30), box_mask(25, 40, 35, 60), box_mask(0, 2, 0, 2))
    depth = rng.integers(0, 3000, (H, W)).astype(np.uint16)
    depth[0:2, 0:2] = 0  # the third part has no depth
    assert lift_to_3d(seg, depth, k, 0.001) == lift_to_3d(seg, depth, K, 0.001)
    assert lift_to_3d(seg, depth, k, 0.001).no_depth == [3]
    assert part_points(seg, depth, k, 0.001).tobytes() == part_points(seg, depth, K, 0.001).tobytes()
    with pytest.raises(WpsSamError, match=r"^depth size 65x48 does not match the image size 64x48"):
        lift_to_3d(seg, np.ones((H, W + 1)), k)  # K takes the depth's size; the depth is checked against the image
    with pytest.raises(WpsSamError, match=r"does not match the image size"):
        part_points(seg, np.ones((H, W, 3)), k)
    with pytest.raises(WpsSamError, match=r"^camera intrinsics: K must be 3x3 \(9 values, row-major\), got 4"):
        lift_to_3d(seg, depth, [1, 2, 3, 4])


@pytest.mark.parametrize("call, problem", [
    (lambda seg: lift_to_3d(seg, np.ones((H, W + 1)), K), "depth size 65x48 does not match the image size 64x48"),
    (lambda seg: lift_to_3d(seg, np.ones((H, W, 3)), K), "does not match the image size"),
    (lambda seg: lift_to_3d(seg, np.ones((H, W), bool), K), "depth must be a numeric image"),
    (lambda seg: lift_to_3d(seg, np.ones((H, W)), K, depth_scale=0), "depth_scale must be a finite number > 0"),
    (lambda seg: lift_to_3d(seg, np.ones((H, W)), K.scaled(32, 24)), "camera intrinsics are for 32x24"),
    (lambda seg: part_points(seg, np.ones((H, W)), K, rgb=np.zeros((H, W), np.uint8)), "rgb must be 48x64x3"),
    (lambda seg: CameraIntrinsics.from_matrix([0, 0, 31.5, 0, 520, 23.7, 0, 0, 1], W, H), "focal length fx"),
    (lambda seg: CameraIntrinsics(500, float("nan"), 1, 1, W, H), "focal length fy"),
    (lambda seg: CameraIntrinsics.from_matrix([1, 2, 3], W, H), "K must be 3x3"),
    (lambda seg: CameraIntrinsics.from_matrix(K.matrix(), 0, H), "width must be an integer >= 1"),
], ids=["depth-size", "depth-3-channel", "depth-bool", "depth-scale-0", "intrinsics-size", "rgb-shape", "fx-0",
        "fy-nan", "K-3-values", "width-0"])
def test_bad_inputs_are_one_line_errors(call, problem):
    seg = segmentation(box_mask(0, 5, 0, 5))
    with pytest.raises(WpsSamError) as err:
        call(seg)
    assert problem in str(err.value) and "\n" not in str(err.value)
