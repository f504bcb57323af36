"""Post-processing of the segmenter's part instances: class-aware duplicate suppression on the
low-resolution masks (`dedup.py`, torch), frame-to-frame track ids (`tracking.py`, numpy + scipy) and
parts linked to their object (`objects.py`, numpy + OpenCV).

Nothing is imported here, so `wps_sam_core.postprocess.tracking` stays importable without torch;
import the module you need, e.g. `from wps_sam_core.postprocess.dedup import deduplicate`.
"""
