"""The onnxruntime segmenter from load_segmenter's arguments: a given ONNX folder, or the model the other
arguments name exported on first use into the cache.

Cache: `$WPS_SAM_CACHE_DIR/onnx/<key>/` (default `$XDG_CACHE_HOME/wps_sam`, else `~/.cache/wps_sam`), key = a
hash of the model's weights, class names, SAM type, opset and precision, so another checkpoint never reuses
stale graphs. The export goes to a temporary folder next to it, renamed into place when complete: a
killed export leaves no half folder, and two processes starting at once both end with complete graphs.
Random SAM weights (tests, smoke runs) differ at every start, so they are exported to a temporary folder
removed once onnxruntime holds the graphs.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import WpsSamError
from .onnx_runner import OnnxRunner

if TYPE_CHECKING:
    from ..segmenter import PartSegmenter, SegmenterSettings

log = logging.getLogger(__name__)
CACHE_ENV = "WPS_SAM_CACHE_DIR"
HALF_PRECISIONS = ("fp16", "bf16")  # onnxruntime runs both as fp16 graphs (GPU providers)


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wps_sam"


def model_key(seg: PartSegmenter, opset: int, fp16: bool) -> str:
    """Hash of everything the graphs depend on: weights (all parameters and buffers), classes, SAM type, opset."""
    from ..checkpoint import tensors_sha256

    weights = tensors_sha256(seg.model.state_dict())
    return hashlib.sha256(f"{seg.sam_type}|{seg.class_names}|{opset}|{fp16}|{weights}".encode()).hexdigest()[:20]


def _export_into(seg: PartSegmenter, directory: Path, fp16: bool) -> None:
    from ..export import export_onnx

    try:
        import onnx  # noqa: F401  (the exporter writes through it)
    except ImportError:
        raise WpsSamError("backend onnxruntime without onnx_dir exports the model first and needs the `export` "
                          "extra: pip install onnx onnxruntime") from None
    export_onnx(seg.model, seg.class_names, directory, sam_type=seg.sam_type, fp16=fp16,
                description=seg.description, caveat=seg.caveat, object_classes=seg.object_classes)


def _damaged_cache_entry(target: Path) -> WpsSamError:
    """A cache entry without export.json: the export is renamed in complete, so something else made or
    changed it; refused rather than deleted (it may hold someone's files), the user removes it knowingly."""
    return WpsSamError(f"ONNX cache {target}: exists without export.json (damaged, or not written by wps_sam); "
                       f"delete it to export the model again, or pass onnx_dir")


def _unwritable(root: Path, exc: OSError) -> WpsSamError:
    return WpsSamError(f"ONNX cache {root}: cannot write ({exc.strerror}); set {CACHE_ENV} or pass onnx_dir")


def exported_graphs(seg: PartSegmenter, fp16: bool, cache: Path | None = None) -> Path:
    """The folder holding `seg`'s graphs in the cache, exported now if it is not there yet (atomically)."""
    from ..export import DEFAULT_OPSET

    root = (cache or cache_root()) / "onnx"
    target = root / model_key(seg, DEFAULT_OPSET, fp16)
    if (target / "export.json").is_file():
        log.info("onnxruntime: graphs of %s from the cache %s", seg.description, target)
        return target
    if target.exists():  # before a minutes-long export that could not be put in place
        raise _damaged_cache_entry(target)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    except OSError as exc:
        raise _unwritable(root, exc) from None
    log.info("onnxruntime: exporting %s to %s (first use; once per model)", seg.description, target)
    try:
        _export_into(seg, tmp, fp16)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, target)  # atomic; fails if another process got there first
        except OSError as exc:
            if not (target / "export.json").is_file():  # not another process's complete export
                raise (_damaged_cache_entry(target) if target.exists() else _unwritable(root, exc)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_matches_prompter(meta: dict, directory: Path, prompter: str | Path, sam_type: str | None) -> None:
    """An ONNX folder run for a named prompter must hold that prompter's model (SAM type, classes)."""
    from ..checkpoint import load_prompter_checkpoint

    ckpt = load_prompter_checkpoint(prompter)
    want_sam = sam_type or ckpt.sam_type
    if meta.get("sam_type") and meta["sam_type"] != want_sam:
        raise WpsSamError(f"{directory / 'export.json'}: graphs for SAM {meta['sam_type']}, but the prompter "
                          f"{prompter} runs on SAM {want_sam}; export this model: wps-sam export --onnx DIR --prompter ...")
    if list(meta["class_names"]) != list(ckpt.class_names):
        raise WpsSamError(f"{directory / 'export.json'}: graphs for {len(meta['class_names'])} part classes "
                          f"{meta['class_names'][:4]}..., but the prompter {prompter} has {len(ckpt.class_names)} "
                          f"{ckpt.class_names[:4]}...; export this model: wps-sam export --onnx DIR --prompter ...")


def runner_options(device: str, providers: str) -> dict:
    """device cpu without onnx_providers = the CPU provider only; cuda:N = GPU N for CUDA/TensorRT."""
    if device.startswith("cuda:") and not device[5:].isdigit():
        raise WpsSamError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return {"providers": providers or ("cpu" if device == "cpu" else ""),
            "device_id": int(device[5:]) if device.startswith("cuda:") else 0}


def load_onnx_segmenter(prompter: str | Path | None, sam_type: str | None, sam_checkpoint: str | Path | None,
                        device: str, precision: str, settings: SegmenterSettings | None, onnx_dir: str | Path,
                        providers: str, threads: int, torch_segmenter: Callable[[], PartSegmenter]) -> PartSegmenter:
    """See the module docstring; `torch_segmenter` builds the PyTorch segmenter of the same arguments
    (load_segmenter's rule and checks) when the graphs must be exported first."""
    from ..modeling.sam import RANDOM_WEIGHTS
    from ..segmenter import PartSegmenter

    options = runner_options(device, providers)
    if onnx_dir:
        if not prompter and sam_checkpoint:
            raise WpsSamError("a SAM checkpoint needs a prompter checkpoint (--prompter, prompter_checkpoint); with "
                              "onnx_dir the graphs bring their own SAM")
        runner = OnnxRunner(onnx_dir, threads=threads, **options)
        meta = runner.metadata
        if prompter:
            check_matches_prompter(meta, Path(onnx_dir), prompter, sam_type)
        elif sam_type and meta.get("sam_type") and sam_type != meta["sam_type"]:
            raise WpsSamError(f"{Path(onnx_dir) / 'export.json'}: graphs for SAM {meta['sam_type']}, not {sam_type}")
        if precision != runner.precision and not (precision in HALF_PRECISIONS and runner.precision == "fp16"):
            log.warning("precision %s: the graphs in %s are %s and run as they are", precision, onnx_dir,
                        runner.precision)
        description = f"{meta.get('description') or 'model'} (ONNX graphs in {onnx_dir})"
        return PartSegmenter(runner, meta["class_names"], settings=settings, sam_type=meta.get("sam_type", ""),
                             description=description, caveat=meta.get("caveat", ""),
                             object_classes=meta.get("object_classes") or None)  # length checked there
    source = torch_segmenter()
    fp16 = precision in HALF_PRECISIONS
    if str(sam_checkpoint or "") == RANDOM_WEIGHTS:  # other weights at every start: nothing worth caching
        with tempfile.TemporaryDirectory(prefix="wps_sam_onnx_") as tmp:
            _export_into(source, Path(tmp), fp16)
            runner = OnnxRunner(tmp, threads=threads, **options)  # onnxruntime holds the graphs in memory now
    else:
        runner = OnnxRunner(exported_graphs(source, fp16), threads=threads, **options)
    return PartSegmenter(runner, source.class_names, settings=source.settings, sam_type=source.sam_type,
                         description=f"{source.description} (onnxruntime, graphs in {runner.directory})",
                         caveat=source.caveat, object_classes=source.object_classes)
