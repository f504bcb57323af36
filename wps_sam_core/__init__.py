"""wps_sam_core: WPS-SAM weakly-supervised part segmentation on a frozen SAM. Never imports ROS."""
from .errors import WpsSamError
from .segmenter import PartInstance, PartSegmentation, PartSegmenter, SegmenterSettings

__all__ = ["WpsSamError", "PartInstance", "PartSegmentation", "PartSegmenter", "SegmenterSettings"]
__version__ = "0.1.0"
