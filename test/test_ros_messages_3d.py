"""The 3D outputs: Detection3DArray linked to the 2D instance ids with hand-computed centres, and PointCloud2 whose
fields come from geometry3d.POINT_DTYPE and read back (rosbags CDR; sensor_msgs_py where ROS 2 is sourced)."""
from __future__ import annotations

import numpy as np
import pytest

from wps_sam_core.postprocess.geometry3d import POINT_DTYPE, lift_to_3d, part_points
from wps_sam_ros.messages import MessageFactory, RosbagsBackend, point_fields, ros2_typestore

from test_ros_messages import STAMP_NS, all_outputs, sample_depth, sample_segmentation


def round_trip(msg):
    store = ros2_typestore()
    return store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


@pytest.fixture(scope="module")
def outputs():
    return all_outputs(MessageFactory(RosbagsBackend()))


def test_detections_3d_are_the_parts_with_depth_at_hand_computed_centres(outputs):
    seg = sample_segmentation()
    depth, k = sample_depth(seg)
    dets = round_trip(outputs["detections_3d"])
    assert dets.header.frame_id == "camera_optical" and dets.header.stamp.nanosec == STAMP_NS % 10**9
    no_depth = {int(i) for i in np.unique(seg.instance_ids[depth == 0])} - {0}
    assert no_depth and {int(d.id) for d in dets.detections} == {i.instance_id for i in seg.instances} - no_depth
    scores = {i.instance_id: (i.class_name, i.score) for i in seg.instances}
    for det in dets.detections:
        v, u = np.nonzero(seg.instance_ids == int(det.id))  # a flat plane at 1 m: every pixel is an inlier
        centre = det.bbox.center.position
        assert (centre.x, centre.y, centre.z) == pytest.approx((np.mean((u - k.cx) / k.fx),
                                                                np.mean((v - k.cy) / k.fy), 1.0), abs=1e-9)
        assert (det.bbox.size.x, det.bbox.size.y, det.bbox.size.z) == pytest.approx(
            ((u.max() - u.min()) / k.fx, (v.max() - v.min()) / k.fy, 0.0))
        assert det.bbox.center.orientation.w == 1.0 and det.bbox.center.orientation.x == 0.0
        (hyp,) = det.results
        assert (hyp.hypothesis.class_id, hyp.hypothesis.score) == pytest.approx(scores[int(det.id)])
        assert hyp.pose.pose.position.z == centre.z and det.header.frame_id == "camera_optical"


def test_point_cloud_fields_come_from_the_dtype_and_read_back(outputs):
    seg = sample_segmentation()
    depth, k = sample_depth(seg)
    cloud = round_trip(outputs["points"])
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("label", 16, 4, 1), ("instance", 18, 4, 1)]
    assert (cloud.height, cloud.point_step, cloud.is_bigendian, cloud.is_dense) == (1, 20, False, True)
    expected = part_points(seg, depth, k)
    assert cloud.width == expected.size == np.count_nonzero((seg.labels > 0) & (depth > 0))
    assert cloud.row_step == 20 * cloud.width
    points = np.frombuffer(bytes(cloud.data), POINT_DTYPE)
    assert points.tobytes() == expected.tobytes()
    assert set(np.unique(points["instance"])) == {p.instance_id for p in lift_to_3d(seg, depth, k).parts}


def test_point_fields_refuse_what_pointfield_cannot_say():
    assert point_fields(np.dtype([("a", "<f8"), ("b", "u1"), ("c", "<i4")])) == [("a", 0, 8), ("b", 8, 2), ("c", 9, 5)]
    for bad in (np.dtype([("x", ">f4")]), np.dtype([("x", "<c8")]), np.dtype([("x", "<f4", (3,))])):
        with pytest.raises(ValueError, match="no PointField datatype"):
            point_fields(bad)


def test_empty_frame_gives_empty_messages():
    seg = sample_segmentation()
    depth = np.zeros(seg.labels.shape, np.float32)  # no depth anywhere
    _, k = sample_depth(seg)
    factory = MessageFactory(RosbagsBackend())
    out = factory.part_messages_3d(factory.header(0), lift_to_3d(seg, depth, k), part_points(seg, depth, k))
    assert round_trip(out["detections_3d"]).detections == []
    cloud = round_trip(out["points"])
    assert (cloud.width, cloud.row_step, len(cloud.data), len(cloud.fields)) == (0, 0, 0, 6)
    assert "points" not in factory.part_messages_3d(factory.header(0), lift_to_3d(seg, depth, k), None)


def test_ros2_reads_the_cloud_with_sensor_msgs_py():
    pytest.importorskip("rclpy", reason="rclpy not installed (no ROS 2 environment sourced)")
    point_cloud2 = pytest.importorskip("sensor_msgs_py.point_cloud2", reason="sensor_msgs_py not installed")
    from wps_sam_ros.messages import RclpyBackend

    seg = sample_segmentation()
    depth, k = sample_depth(seg)
    cloud = all_outputs(MessageFactory(RclpyBackend()))["points"]
    read = point_cloud2.read_points(cloud, field_names=("x", "y", "z", "label", "instance"), skip_nans=True)
    expected = part_points(seg, depth, k)
    for name in ("x", "y", "z", "label", "instance"):
        assert np.array_equal(read[name], expected[name]), name
