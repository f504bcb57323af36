"""wps_sam_ros.sync: message_filters' ApproximateTimeSynchronizer policy without ROS, on hand-made stamp sequences;
where ROS 2 is sourced, the real message_filters pairs random sequences exactly as this class does."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from wps_sam_ros.sync import RESTART_S, ApproximateTimeSync, DepthFrameSync, clear_on_restart, stamp_ns

MS = 1_000_000


def stamp_of(m) -> int:
    return stamp_ns(m.header)


def msg(stamp_ns: int, tag: str = ""):
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec)), tag=tag)


def run(sequence, n_inputs=2, queue_size=10, slop_s=0.01):
    """sequence: (input index, stamp ns) in arrival order -> the emitted sets as tuples of stamps."""
    sets = []
    sync = ApproximateTimeSync(n_inputs, queue_size, slop_s, lambda *m: sets.append(tuple(stamp_of(x) for x in m)))
    for index, stamp in sequence:
        sync.add(index, msg(stamp))
    return sets, sync


def test_equal_stamps_pair_in_either_arrival_order():
    sets, sync = run([(0, 0), (1, 0), (1, 33 * MS), (0, 33 * MS), (0, 66 * MS), (1, 66 * MS)])
    assert sets == [(0, 0), (33 * MS, 33 * MS), (66 * MS, 66 * MS)]
    assert sync.queues == [{}, {}] and sync.emitted == 3


def test_slop_is_strict_as_in_message_filters():
    """|delta| <= slop makes a candidate, but a set must spread strictly less than slop: delta == slop never pairs."""
    assert run([(0, 0), (1, 10 * MS)], slop_s=0.01)[0] == []
    assert run([(0, 0), (1, 10 * MS - 1)], slop_s=0.01)[0] == [(0, 10 * MS - 1)]
    assert run([(0, 0), (1, 5 * MS)], slop_s=0.004)[0] == []


def test_the_nearest_stamp_is_taken_and_the_others_wait():
    sets, sync = run([(0, 0), (0, 30 * MS), (0, 60 * MS), (1, 35 * MS)], slop_s=0.04)
    assert sets == [(30 * MS, 35 * MS)]
    assert sorted(sync.queues[0]) == [0, 60 * MS]  # not paired, still queued
    sets, _ = run([(0, 0), (0, 30 * MS), (0, 60 * MS), (1, 35 * MS), (1, 61 * MS)], slop_s=0.04)
    assert sets == [(30 * MS, 35 * MS), (60 * MS, 61 * MS)]


def test_queue_size_drops_the_oldest_and_counts_it():
    # six images and no depth: with queue_size 3 the first three are gone when their depth finally comes
    sequence = [(0, i * 33 * MS) for i in range(6)] + [(1, 0), (1, 33 * MS), (1, 99 * MS + MS)]
    sets, sync = run(sequence, queue_size=3)
    assert sets == [(99 * MS, 100 * MS)]
    assert sync.unpaired[0] == 3 and sorted(sync.queues[1]) == [0, 33 * MS]


def test_a_message_older_than_a_full_queue_is_dropped_not_paired():
    """After a stamp jump backwards (a bag loop) with unpaired messages left, a late message is the oldest in its
    full queue: trimmed at once, never emitted (as in message_filters), and no KeyError."""
    sets, sync = run([(0, 980 * MS), (0, 990 * MS), (1, 20 * MS), (0, 21 * MS)], queue_size=2)
    assert sets == [] and sorted(sync.queues[0]) == [980 * MS, 990 * MS] and sync.unpaired[0] == 1


def looped_bag(frames: int = 60, lost_depth_at_end: int = 10):
    """Colour + depth at 30 Hz whose last depth images are lost (their colour images stay unpaired in a full queue),
    then the same stamps again from the start: `ros2 bag play --loop`."""
    one_pass = []
    for f in range(frames):
        one_pass.append((0, f * 33 * MS))
        if f < frames - lost_depth_at_end:
            one_pass.append((1, f * 33 * MS + MS))
    return one_pass + one_pass


def test_a_bag_loop_clears_the_queues_and_pairing_goes_on():
    """message_filters alone would drop every colour image of the second pass (each older than the full queue of
    unpaired images from the end of the first pass); the guard sees the stream start over and clears the queues."""
    sets, sync = run(looped_bag(), queue_size=10)
    per_pass = 60 - 10
    assert len(sets) == 2 * per_pass and sets[per_pass] == (0, MS) and sync.restarts == 1
    assert sync.unpaired[0] == 10  # the first pass's unpaired images, cleared at the jump


def test_reordering_within_restart_s_is_not_a_restart():
    late = int(RESTART_S * 1e9) - 50 * MS  # an image arriving this late (< RESTART_S) is just late
    sets, sync = run([(0, 2000 * MS), (0, 2000 * MS - late), (1, 2000 * MS - late + MS), (1, 2000 * MS)])
    assert sync.restarts == 0 and sets == [(2000 * MS - late, 2000 * MS - late + MS), (2000 * MS, 2000 * MS)]


def test_a_repeated_stamp_replaces_the_queued_message():
    sets = []
    sync = ApproximateTimeSync(2, 10, 0.01, lambda a, b: sets.append((a.tag, b.tag)))
    sync.add(0, msg(5 * MS, "first"))
    sync.add(0, msg(5 * MS, "second"))
    sync.add(1, msg(6 * MS, "depth"))
    assert sets == [("second", "depth")]


def test_three_inputs_need_all_three_within_slop():
    sets, _ = run([(0, 0), (1, 4 * MS), (2, 12 * MS), (2, 8 * MS)], n_inputs=3, slop_s=0.01)
    assert sets == [(0, 4 * MS, 8 * MS)]  # 12 ms is 12 from the image: never in a set with it


def test_bad_construction_is_refused():
    with pytest.raises(ValueError, match="at least 2 inputs"):
        ApproximateTimeSync(1, 10, 0.01, print)
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeSync(2, 0, 0.01, print)


def test_depth_frame_sync_adds_the_latest_camera_info():
    got = []
    sync = DepthFrameSync(5, 0.01, lambda image, depth, info: got.append((image.tag, depth.tag, info and info.tag)))
    sync.add_image(msg(0, "image0"))
    sync.add_depth(msg(MS, "depth0"))
    sync.add_camera_info(msg(0, "info0"))  # stamps of CameraInfo do not matter: the latest one is used
    sync.add_camera_info(msg(7 * MS, "info1"))
    sync.add_depth(msg(33 * MS, "depth1"))
    sync.add_image(msg(34 * MS, "image1"))
    assert got == [("image0", "depth0", None), ("image1", "depth1", "info1")]


# ---- the real message_filters (runs where ROS 2 is sourced) ------------------------------------------
def random_sequences(n_inputs: int, count: int):
    rng = random.Random(n_inputs)
    for _ in range(count):
        sequence = []
        for frame in range(rng.randint(5, 40)):
            for index in range(n_inputs):
                if rng.random() < 0.85:  # some messages lost
                    jitter = rng.choice([0, 0, rng.randint(-15, 15) * MS, rng.randint(-3000, 3000) * 1000])
                    sequence.append((index, frame * 33 * MS + jitter + 10**18))
        rng.shuffle(sequence[len(sequence) // 3:])  # arrival order mixed up, as over a network
        yield sequence, rng.choice([1, 2, 5, 10]), rng.choice([0.001, 0.005, 0.01, 0.02, 0.05])


@pytest.mark.parametrize("n_inputs", [2, 3])
def test_pairs_exactly_like_rclpy_message_filters(n_inputs):
    message_filters = pytest.importorskip("message_filters", reason="message_filters missing: needs a sourced ROS 2")
    from std_msgs.msg import Header

    def ros_msg(stamp: int):
        header = Header()
        header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        return SimpleNamespace(header=header)

    checked = 0
    for sequence, queue_size, slop in random_sequences(n_inputs, 60):
        filters = [message_filters.SimpleFilter() for _ in range(n_inputs)]
        theirs = []
        clear_on_restart(filters, lambda: ats)  # as the rclpy node does
        ats = message_filters.ApproximateTimeSynchronizer(filters, queue_size, slop)
        ats.registerCallback(lambda *m: theirs.append(tuple(stamp_of(x) for x in m)))
        ours, _ = run(sequence, n_inputs, queue_size, slop)
        for index, stamp in sequence:
            filters[index].signalMessage(ros_msg(stamp))
        assert ours == theirs, (queue_size, slop, sequence)
        checked += len(ours)
    assert checked > 100  # the sequences do produce sets


def test_the_rclpy_node_guard_unstalls_message_filters_on_a_bag_loop():
    """Bare message_filters stalls after the loop (no set from the second pass); with clear_on_restart in front, as
    the rclpy node has it, it pairs exactly as ApproximateTimeSync does."""
    message_filters = pytest.importorskip("message_filters", reason="message_filters missing: needs a sourced ROS 2")
    from std_msgs.msg import Header

    def feed(guarded: bool) -> list:
        filters = [message_filters.SimpleFilter() for _ in range(2)]
        if guarded:
            clear_on_restart(filters, lambda: ats)
        ats = message_filters.ApproximateTimeSynchronizer(filters, 10, 0.01)
        got = []
        ats.registerCallback(lambda *m: got.append(tuple(stamp_of(x) for x in m)))
        for index, stamp in looped_bag():
            header = Header()
            header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            filters[index].signalMessage(SimpleNamespace(header=header))
        return got

    ours, _ = run(looped_bag(), queue_size=10)
    assert len(feed(guarded=False)) == 50  # the first pass only: stalled
    assert feed(guarded=True) == ours
