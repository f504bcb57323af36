"""Result tables: metrics of several methods (SegmentationMetrics.compute() dicts, with the instance
metrics of evaluate.EvaluationResult.results() where a method has them) as markdown and JSON.

Fractions are shown as percentages with two decimals (the paper's convention); NaN is shown
as "n/a" in markdown and stored as null in JSON. Files are written atomically.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..io_utils import atomic_write_text

# (results key, column header); the one place that names the columns of the summary table.
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("paper_mIoU", "mIoU (paper protocol)"),
    ("paper_mAcc", "mAcc (paper protocol)"),
    ("mIoU", "mIoU (dataset, parts)"),
    ("mAcc", "mAcc (dataset, parts)"),
    ("mIoU_with_background", "mIoU (dataset, parts + bg)"),
    ("pixel_acc", "pixel acc (dataset)"),
)
PER_CLASS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("IoU", "IoU (dataset)"),
    ("Acc", "Acc (dataset)"),
    ("paper_IoU", "IoU (paper)"),
    ("paper_Acc", "Acc (paper)"),
)
# Instance metrics (evaluation/instances.py), shown for the methods that have them; ratios are not percentages.
INSTANCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pq", "PQ"), ("sq", "SQ"), ("rq", "RQ"), ("ap", "mask AP"), ("ap50", "AP50"), ("ap75", "AP75"),
)
INSTANCE_RATIO_COLUMNS: tuple[tuple[str, str], ...] = (
    ("duplicates_per_gt", "predictions per matched GT"), ("fragments_per_gt", "fragments per GT"),
)
INSTANCE_PER_CLASS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("PQ", "PQ"), ("SQ", "SQ"), ("RQ", "RQ"), ("AP", "AP"), ("AP50", "AP50"),
)
INSTANCE_NOTE = (
    "Instance metrics on the part masks before painting (overlapping, after duplicate suppression): "
    "PQ = SQ x RQ per part class at IoU > 0.5, mean over classes with TP + FP + FN > 0; mask AP / AP50 / AP75 "
    "from pycocotools' COCOeval (segm); predictions per matched GT = mean over GT instances with at least one "
    "same-class prediction at IoU > 0.5 of how many there are (1.00 = no duplicates); fragments per GT: the same "
    "with 'over half of the prediction lies on the GT'. PQ/SQ/RQ/AP in %."
)
PROTOCOL_NOTE = (
    "Paper protocol: mean over (image, part class present in that image's GT) pairs of IoU and of "
    "recall (Acc); absent classes cost nothing. Dataset protocol: one confusion matrix over all images; "
    "mean over part classes present in the GT (background excluded unless stated); classes never in the "
    "GT are excluded from the means. Ignore pixels are excluded everywhere. Values in %."
)


def format_percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100.0 * float(value):.2f}"


def summary_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per method, columns of both protocols (clearly named), plus image count."""
    header = ["Method"] + [title for _, title in SUMMARY_COLUMNS] + ["images"]
    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for method, metrics in results.items():
        cells = [_escape(method)] + [format_percent(metrics.get(key)) for key, _ in SUMMARY_COLUMNS]
        lines.append(_row(cells + [str(metrics.get("num_images", ""))]))
    return "\n".join(lines) + "\n"


def format_ratio(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.2f}"


def instance_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per method that has instance metrics: PQ/SQ/RQ, mask AP, duplicates; "" when none has."""
    rows = {method: metrics for method, metrics in results.items() if "pq" in metrics}
    if not rows:
        return ""
    header = ["Method"] + [t for _, t in INSTANCE_COLUMNS] + [t for _, t in INSTANCE_RATIO_COLUMNS]
    header += ["TP", "FP", "FN"]
    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for method, metrics in rows.items():
        counts = metrics.get("instances", {})
        cells = [_escape(method)] + [format_percent(metrics.get(key)) for key, _ in INSTANCE_COLUMNS]
        cells += [format_ratio(metrics.get(key)) for key, _ in INSTANCE_RATIO_COLUMNS]
        lines.append(_row(cells + [str(counts.get(k, "")) for k in ("tp", "fp", "fn")]))
    return "\n".join(lines) + "\n"


def instance_per_class_markdown(metrics: Mapping[str, Any]) -> str:
    """Per-class instance table of one method (PQ/SQ/RQ, counts, AP); "" without instance metrics."""
    rows = metrics.get("instances", {}).get("per_class")
    if not rows:
        return ""
    header = ["id", "class"] + [t for _, t in INSTANCE_PER_CLASS_COLUMNS] + ["TP", "FP", "FN"]
    lines = [_row(header), _row(["---:", "---"] + ["---:"] * (len(header) - 2))]
    for row in rows:
        cells = [str(row["class_id"]), _escape(row["name"])]
        cells += [format_percent(row.get(key)) for key, _ in INSTANCE_PER_CLASS_COLUMNS]
        lines.append(_row(cells + [str(row["TP"]), str(row["FP"]), str(row["FN"])]))
    return "\n".join(lines) + "\n"


def per_class_markdown(metrics: Mapping[str, Any]) -> str:
    """Per-class table of one method: both protocols, images containing the class, GT pixels."""
    header = ["id", "class"] + [title for _, title in PER_CLASS_COLUMNS] + ["images in GT", "GT pixels"]
    lines = [_row(header), _row(["---:", "---"] + ["---:"] * (len(header) - 2))]
    for row in metrics.get("per_class", []):
        cells = [str(row["class_id"]), _escape(row["name"])]
        cells += [format_percent(row.get(key)) for key, _ in PER_CLASS_COLUMNS]
        lines.append(_row(cells + [str(row["paper_images"]), str(row["gt_pixels"])]))
    return "\n".join(lines) + "\n"


OBJECT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("part_accuracy", "part accuracy"), ("pair_precision", "pair precision"), ("pair_recall", "pair recall"),
    ("pair_f1", "pair F1"), ("objects_exact", "objects exact"),
    ("objects_exact_given_detected", "objects exact (all parts detected)"),
)
OBJECT_NOTE = (
    "Parts linked to their object (evaluation/objects.py), on the painted parts matched to a GT part (same class, "
    "IoU > 0.5): part accuracy = matched parts whose predicted object holds exactly the matched parts of their GT "
    "object; pairs of matched parts of one image, 'same object' positive; objects exact = GT objects with every "
    "part matched and one predicted object of exactly their predictions (over all GT objects; and over those "
    "whose parts were all matched). In %."
)


def object_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per method with part-to-object scores (a dataset with GT objects); "" when none has."""
    rows = {method: metrics["objects"] for method, metrics in results.items() if "objects" in metrics}
    if not rows:
        return ""
    header = ["Method"] + [t for _, t in OBJECT_COLUMNS] + ["matched parts", "pairs TP / FP / FN"]
    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for method, r in rows.items():
        cells = [_escape(method)] + [format_percent(r.get(key)) for key, _ in OBJECT_COLUMNS]
        lines.append(_row(cells + [str(r["matched_parts"]), f"{r['pair_tp']} / {r['pair_fp']} / {r['pair_fn']}"]))
    return "\n".join(lines) + "\n"


def depth_markdown(results: Mapping[str, Mapping[str, Any]], floor: Mapping[str, Any] | None = None) -> str:
    """3D part-centre errors (evaluation/geometry.py): one row per method (and the GT-mask floor) and depth
    variant: matched parts, median / p90 error in cm overall and at 0.8-1.2 m, matched parts without depth;
    "" when nothing was lifted."""
    rows = [(m, r["depth3d"]) for m, r in results.items() if r.get("depth3d")]
    if floor:
        rows.insert(0, ("GT masks (depth noise only)", floor))
    if not rows:
        return ""
    header = ["Method", "depth", "matched parts", "median (cm)", "p90 (cm)", "median at 0.8-1.2 m (cm)",
              "p90 at 0.8-1.2 m (cm)", "parts at 0.8-1.2 m", "no depth"]
    lines = [_row(header), _row(["---", "---"] + ["---:"] * (len(header) - 2))]
    cm = lambda v: "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"  # noqa: E731
    for method, variants in rows:
        for variant, m in variants.items():
            at_1m = next((b for b in m["by_distance"] if b["bin"] == "0.8-1.2 m"), {})
            lines.append(_row([_escape(method), variant.replace("_", " "), str(m["matched"]), cm(m["median_m"]),
                               cm(m["p90_m"]), cm(at_1m.get("median_m")), cm(at_1m.get("p90_m")),
                               str(at_1m.get("matched", 0)), str(m["no_depth"])]))
    return "\n".join(lines) + "\n"


DEPTH_NOTE = ("3D centre error: Euclidean distance between the lift_to_3d centre of a predicted part matched to a "
              "GT part (same class, mask IoU > 0.5) and the GT centre (lift_to_3d's robust centre of the GT mask on "
              "the noise-free depth); 'no depth': matched parts without a valid depth pixel.")


def render_markdown(results: Mapping[str, Mapping[str, Any]], title: str = "Part segmentation results",
                    depth_floor: Mapping[str, Any] | None = None) -> str:
    """The full report: summary table, protocol note, the instance table (where there are instance
    metrics), one per-class table per method (and its per-class instance table)."""
    sections = [f"# {title}\n", summary_markdown(results), f"{PROTOCOL_NOTE}\n"]
    instances = instance_markdown(results)
    if instances:
        sections += ["## Part instances\n", instances, f"{INSTANCE_NOTE}\n"]
    objects = object_markdown(results)
    if objects:
        sections += ["## Parts linked to their object\n", objects, f"{OBJECT_NOTE}\n"]
    depth = depth_markdown(results, depth_floor)
    if depth:
        sections += ["## Parts in 3D\n", depth, f"{DEPTH_NOTE}\n"]
    for method, metrics in results.items():
        sections += [f"## Per class: {method}\n", per_class_markdown(metrics)]
        per_class_instances = instance_per_class_markdown(metrics)
        if per_class_instances:
            sections += [f"Instances ({method}):\n", per_class_instances]
    return "\n".join(sections)


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: NaN/inf -> None, numpy scalars/arrays -> Python numbers/lists."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def results_json(results: Mapping[str, Mapping[str, Any]]) -> str:
    return json.dumps(to_jsonable(results), indent=2, allow_nan=False) + "\n"


def write_report(results: Mapping[str, Mapping[str, Any]], markdown_path: str | os.PathLike | None = None,
                 json_path: str | os.PathLike | None = None, title: str = "Part segmentation results",
                 depth_floor: Mapping[str, Any] | None = None) -> None:
    """Write the markdown report and/or the JSON results, each atomically."""
    if markdown_path is not None:
        atomic_write_text(markdown_path, render_markdown(results, title, depth_floor))
    if json_path is not None:
        atomic_write_text(json_path, results_json(results))


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
