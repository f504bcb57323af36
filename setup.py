"""ament_python package `wps_sam_ros`: installable with pip (no ROS needed) and with colcon."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "wps_sam_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="WPS-SAM weakly-supervised part segmentation on a frozen SAM, as a ROS 2 node",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["wps_sam_core", "wps_sam_core.*", "wps_sam_ros", "wps_sam_ros.*"]),
    package_data={"wps_sam_core": ["assets/*.safetensors", "assets/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=[
        "numpy>=1.23",
        "torch>=2.1",
        "torchvision>=0.16",
        "segment-anything>=1.0",
        "safetensors>=0.4",
        "scipy>=1.10",
        "opencv-python-headless>=4.8",  # cv2 without GUI libraries; same module as opencv-python
        "pillow>=9",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    extras_require={
        "train": ["pycocotools>=2.0.7", "lightning>=2.2", "tensorboard>=2.14", "motmetrics>=1.4"],
        "ros-tools": ["rosbags>=0.10", "cyclonedds>=0.10", "mcap>=1.1"],
        "export": ["onnx>=1.15", "onnxruntime>=1.17"],
        "light": ["mobilesam-mirror>=1.0", "timm>=0.9"],  # SAM type vit_t (MobileSAM's TinyViT encoder)
        "dev": ["wps_sam_ros[train,ros-tools,export,light]", "pytest>=8", "hypothesis>=6",
                "colcon-common-extensions>=0.3"],
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "wps-sam = wps_sam_core.cli.main:main",
            "part_seg_node = wps_sam_ros.node:main",
        ],
        "wps_sam.commands": ["bag = wps_sam_ros.bag"],
    },
)
