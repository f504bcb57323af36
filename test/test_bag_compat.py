"""The bags `wps-sam bag` writes are readable by every supported ROS 2: Humble's rosbag2 decodes each topic's
offered_qos_profiles as a YAML *string* (version >= 4) and fails with "yaml-cpp: bad conversion" on the list form of
metadata version 9, so OUT must be version 8 with the string form, which Iron and Jazzy read too."""
from __future__ import annotations

import pytest

pytest.importorskip("rosbags", reason="rosbags (pip) not installed")

import yaml  # noqa: E402
from rosbags.rosbag2 import StoragePlugin  # noqa: E402

from wps_sam_core.cli import main as wps_sam  # noqa: E402
from wps_sam_ros.bag import BAG_METADATA_VERSION  # noqa: E402

from test_ros_bag import model_args, write_bag  # noqa: E402

# the keys Humble's rosbag2_transport reads from each QoS entry (qos.cpp, YAML::convert<Rosbag2QoS>)
HUMBLE_QOS_KEYS = {"history", "depth", "reliability", "durability", "deadline", "lifespan", "liveliness",
                   "liveliness_lease_duration", "avoid_ros_namespace_conventions"}


def test_output_bag_metadata_is_the_form_humble_reads(tmp_path, tiny_files):
    src, dst = tmp_path / "in", tmp_path / "out"
    write_bag(src, StoragePlugin.SQLITE3, compressed=False)  # a version-9 input bag
    assert wps_sam(["bag", str(src), str(dst), "--image-topic", "/camera/image_raw", *model_args(tiny_files)]) == 0
    info = yaml.safe_load((dst / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert BAG_METADATA_VERSION == 8 and info["version"] == 8
    topics = {t["topic_metadata"]["name"]: t["topic_metadata"] for t in info["topics_with_message_count"]}
    assert {"/camera/image_raw", "/parts/masks", "/parts/label_info"} <= set(topics)
    for name, meta in topics.items():
        qos = meta["offered_qos_profiles"]
        assert isinstance(qos, str), f"{name}: offered_qos_profiles is {type(qos).__name__}, Humble needs a string"
        for profile in yaml.safe_load(qos) or []:  # the input's own topics may record no QoS ("")
            assert set(profile) == HUMBLE_QOS_KEYS, name
    latched = yaml.safe_load(topics["/parts/label_info"]["offered_qos_profiles"])[0]
    assert latched["durability"] == 1 and latched["reliability"] == 1  # transient local, reliable: stays latched
