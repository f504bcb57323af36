"""The onnxruntime backend: the three graphs of `wps-sam export --onnx DIR` (see export.py).

Execution providers come from `onnx_providers` ("" = TensorRT if the installed onnxruntime offers it, then
CUDA, then CPU); the one that runs is logged and shown in /diagnostics. On a GPU provider the image
embedding stays on the device between the graphs (IO binding): the encoder's output is bound to GPU
memory and handed to the prompter and the decoder as it is, so only the image goes up and the small
logits/tokens and low-res masks come down. A folder that cannot run (missing or corrupt file, graphs of
another model, an opset newer than the installed onnxruntime) is refused in one line naming the file.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import WpsSamError
from ..export import DECODER_FILE, DEFAULT_OPSET, ENCODER_FILE, METADATA_FILE, PROMPTER_FILE
from . import PROVIDER_NAMES
from .base import Runner

log = logging.getLogger(__name__)

GRAPHS = {"image_encoder": ENCODER_FILE, "prompter": PROMPTER_FILE, "mask_decoder": DECODER_FILE}
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
DEFAULT_OPTIMIZATION = "all"  # measured: benchmarks/bench_backends.py
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
TRT_MAX_BATCH = 8  # TensorRT optimisation profile: images per call (the node sends 1)
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise WpsSamError("backend onnxruntime needs the `export` extra: pip install onnx onnxruntime "
                          "(onnxruntime-gpu for CUDA/TensorRT)") from None
    return onnxruntime


def resolve_providers(spec: str | list[str] | tuple[str, ...] = "") -> list[str]:
    """'tensorrt,cuda,cpu' (short or onnxruntime names; "" = that order) -> the available ones, in order.
    A name onnxruntime does not know, or a list none of whose providers is installed, is refused."""
    ort = import_onnxruntime()
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    explicit = bool(names)
    names = names or list(PROVIDER_NAMES)
    available = ort.get_available_providers()
    wanted = []
    for name in names:
        full = PROVIDER_NAMES.get(name.lower(), name)
        if full not in ort.get_all_providers():
            raise WpsSamError(f"onnx_providers: unknown execution provider {name!r}; use "
                              f"{', '.join(PROVIDER_NAMES)} or onnxruntime's names ({', '.join(available)} here)")
        if full in available and full not in wanted:
            wanted.append(full)
    if not wanted:
        raise WpsSamError(f"onnx_providers {','.join(names)}: none is available in this onnxruntime "
                          f"{ort.__version__} (available: {', '.join(available)})")
    if explicit and len(wanted) < len({PROVIDER_NAMES.get(n.lower(), n) for n in names}):
        log.warning("onnx_providers: %s not available here; using %s", ",".join(names), ",".join(wanted))
    return wanted


def read_export(directory: str | Path) -> dict:
    """export.json of an ONNX folder, checked for what the runner relies on."""
    directory = Path(directory)
    if not directory.is_dir():
        raise WpsSamError(f"onnx_dir {directory}: {'not a folder' if directory.exists() else 'not found'}; "
                          f"make one with: wps-sam export --onnx {directory}")
    path = directory / METADATA_FILE
    if not path.is_file():
        raise WpsSamError(f"{path}: missing; not a folder written by wps-sam export --onnx")
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WpsSamError(f"{path}: not valid JSON ({exc})") from None
    keys = ("class_names", "image_size", "embedding_shape", "files")
    if not isinstance(meta, dict) or meta.get("format") != "wps_sam_onnx" or not all(k in meta for k in keys):
        raise WpsSamError(f"{path}: not the metadata of wps-sam export --onnx (needs format wps_sam_onnx and "
                          f"{', '.join(keys)})")
    if meta.get("format_version", 1) > 1:
        raise WpsSamError(f"{path}: format_version {meta['format_version']} is newer than this wps_sam (1); "
                          f"re-export with this version or update wps_sam")
    objects = meta.get("object_classes")
    if objects is not None and (not isinstance(objects, list) or len(objects) != len(meta["class_names"])):
        raise WpsSamError(f"{path}: object_classes must list one object class per part class "
                          f"({len(meta['class_names'])}), got {objects!r:.80}; re-export the folder")
    missing = [name for name in GRAPHS if name not in meta["files"]]
    if missing:
        raise WpsSamError(f"{path}: the export has no {', '.join(missing)} graph (exported with --no-encoder?); "
                          f"the onnxruntime backend needs all three: re-export without --no-encoder")
    return meta


def _load_error(path: Path, exc: Exception, ort) -> WpsSamError:
    """onnxruntime's multi-line load failure -> one line naming the file and what to do."""
    text = str(exc)
    opset = re.search(r"Opset (\d+) is under development", text)
    if opset or "opset" in text.lower() and "support" in text.lower():
        newest = re.search(r"till opset (\d+)", text)
        return WpsSamError(f"{path}: opset {opset.group(1) if opset else '?'} is newer than onnxruntime "
                           f"{ort.__version__} supports{f' (up to {newest.group(1)})' if newest else ''}; re-export "
                           f"with --opset {DEFAULT_OPSET} or update onnxruntime")
    if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text:
        return WpsSamError(f"{path}: not a valid ONNX file (truncated or corrupt); re-export it")
    first = text.splitlines()[0] if text else type(exc).__name__
    return WpsSamError(f"{path}: onnxruntime {ort.__version__} cannot load it: {first[:300]}")


def _dims(value_info) -> list:
    return list(value_info.shape)


class OnnxRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, directory: str | Path, providers: str | list[str] | tuple[str, ...] = "", threads: int = 0,
                 optimization: str = DEFAULT_OPTIMIZATION, io_binding: bool | None = None, device_id: int = 0) -> None:
        """`threads`: onnxruntime's intra-op threads per graph (0 = its default, one per physical core);
        `io_binding` None = on for GPU providers (where it saves the embedding's round trips), else off;
        `device_id`: the GPU of the CUDA/TensorRT providers."""
        ort = import_onnxruntime()
        if optimization not in OPTIMIZATION_LEVELS:
            raise WpsSamError(f"graph optimisation must be one of {list(OPTIMIZATION_LEVELS)}, got {optimization!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise WpsSamError(f"onnx_threads must be an integer >= 0 (0 = onnxruntime's default), got {threads!r}")
        self.directory = Path(directory)
        self.metadata = meta = read_export(self.directory)
        self.providers = resolve_providers(providers)
        if meta.get("precision") == "fp16" and optimization == "all":
            # onnxruntime 1.32's CPU layout transforms (level "all") crash (SIGSEGV) on the fp16 prompter graph;
            # "extended" keeps the fusions that matter on GPU providers
            optimization = "extended"
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
        options.intra_op_num_threads = threads
        # three sessions = three thread pools; spinning workers of one pool stall the next graph and the shared
        # post-processing on a small CPU (2 threads on 2 cores ran 3x slower than 1 thread): workers sleep instead
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # onnxruntime's own warnings (e.g. nodes it places on CPU) stay out of logs
        self.threads, self.optimization, self._gpu_id = threads, optimization, device_id
        self.sessions = {}
        for name, default_file in GRAPHS.items():
            path = self.directory / meta["files"].get(name, default_file)
            if not path.is_file():
                raise WpsSamError(f"{path}: missing (export.json lists it); re-export the folder")
            try:
                self.sessions[name] = ort.InferenceSession(str(path), options, providers=self._provider_options(name))
            except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf / ... classes
                raise _load_error(path, exc, ort) from None
        self._check_graphs()
        self.image_size = int(meta["image_size"])
        self.class_names = list(meta["class_names"])
        self.num_classes = len(self.class_names)
        self.precision = meta.get("precision", "fp32")
        running = self.sessions["image_encoder"].get_providers()[0]
        self._provider = running
        gpu = running in GPU_PROVIDERS
        self.device_id = int(self.sessions["image_encoder"].get_provider_options().get(running, {}).get("device_id", 0))
        self.io_binding = gpu if io_binding is None else io_binding
        self._device_type = "cuda" if gpu else "cpu"
        self.device = torch.device("cpu")  # outputs of prompt/decode come to the host for the shared post-processing
        if running != self.providers[0]:
            log.warning("onnxruntime: %s could not start; running on %s", self.providers[0], running)
        if not gpu and self.precision == "fp16":
            log.warning("%s holds fp16 graphs, made for GPU providers; on %s they run slower than fp32 ones",
                        self.directory, running)
        log.info("onnxruntime %s: graphs in %s (%s) on %s, %s intra-op threads, optimisation %s%s", ort.__version__,
                 self.directory, self.precision, running, threads or "default", optimization,
                 ", IO binding" if self.io_binding else "")

    @property
    def provider(self) -> str:
        return self._provider

    # ---- sessions ------------------------------------------------------------------------
    def _provider_options(self, graph: str) -> list:
        """Providers with their options: TensorRT gets an engine cache (engines take minutes to build) and
        optimisation profiles for the dynamic batch and kept-query count; fp16 graphs keep fp16 in TensorRT."""
        meta, out = self.metadata, []
        for provider in self.providers:
            if provider == "CUDAExecutionProvider":
                out.append((provider, {"device_id": self._gpu_id}))
                continue
            if provider != "TensorrtExecutionProvider":
                out.append(provider)
                continue
            c, s, _ = meta["embedding_shape"]
            size, queries = meta["image_size"], TRT_MAX_BATCH * int(meta.get("num_queries", 100))
            tokens = int(meta.get("num_prompt_tokens", 2))
            shapes = {"image_encoder": (f"image:1x3x{size}x{size}", f"image:{TRT_MAX_BATCH}x3x{size}x{size}"),
                      "prompter": (f"embedding:1x{c}x{s}x{s}", f"embedding:{TRT_MAX_BATCH}x{c}x{s}x{s}"),
                      "mask_decoder": (f"embedding:1x{c}x{s}x{s},image_index:1,tokens:1x{tokens}x{c}",
                                       f"embedding:{TRT_MAX_BATCH}x{c}x{s}x{s},image_index:{queries},"
                                       f"tokens:{queries}x{tokens}x{c}")}[graph]
            cache = self.directory / "tensorrt_cache"
            options = {"device_id": self._gpu_id, "trt_fp16_enable": meta.get("precision") == "fp16",
                       "trt_profile_min_shapes": shapes[0],
                       "trt_profile_opt_shapes": shapes[0], "trt_profile_max_shapes": shapes[1]}
            try:
                cache.mkdir(exist_ok=True)
                options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache))
            except OSError:
                log.warning("%s: not writable; TensorRT engines are rebuilt at every start", cache)
            out.append((provider, options))
        return out

    def _check_graphs(self) -> None:
        """The graphs' static shapes against export.json: files mixed from two exports are refused by name."""
        meta = self.metadata
        c, s, _ = meta["embedding_shape"]
        size, classes = meta["image_size"], len(meta["class_names"])
        where = self.directory / METADATA_FILE
        encoder, prompter, decoder = (self.sessions[n] for n in GRAPHS)
        checks = [
            ("image_encoder", _dims(encoder.get_inputs()[0])[1:], [3, size, size], f"{size}-px images"),
            ("image_encoder", _dims(encoder.get_outputs()[0])[1:], [c, s, s], f"{c}x{s}x{s} embeddings"),
            ("prompter", _dims(prompter.get_inputs()[0])[1:], [c, s, s], f"{c}x{s}x{s} embeddings"),
            ("prompter", _dims(prompter.get_outputs()[0])[-1:], [classes + 1], f"{classes} part classes"),
            ("mask_decoder", _dims(decoder.get_inputs()[0])[1:], [c, s, s], f"{c}x{s}x{s} embeddings"),
        ]
        for graph, got, want, what in checks:
            if all(isinstance(g, int) for g in got) and got != want:
                path = self.directory / meta["files"][graph]
                raise WpsSamError(f"{path}: graph of another model (shape {got}), {where.name} says {what} for SAM "
                                  f"{meta.get('sam_type') or '?'}; the folder mixes files of two exports: re-export it")
        self._inputs = {name: {i.name: _NUMPY_TYPES.get(i.type, np.float32) for i in self.sessions[name].get_inputs()}
                        for name in GRAPHS}
        self._outputs = {name: [o.name for o in self.sessions[name].get_outputs()] for name in GRAPHS}

    # ---- running -------------------------------------------------------------------------
    def _run(self, graph: str, feeds: dict[str, Any], on_device: tuple[str, ...] = ()) -> list[Any]:
        """Run one graph. Without IO binding: numpy in, numpy out. With it: OrtValues (the embedding) and CUDA
        torch tensors are bound where they live, `on_device` outputs stay on the provider's device as OrtValues."""
        session, types = self.sessions[graph], self._inputs[graph]
        if not self.io_binding:
            return session.run(None, {k: _host(v, types[k]) for k, v in feeds.items()})
        ort = import_onnxruntime()
        binding = session.io_binding()  # one per call: runs from several threads do not share it
        for key, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(key, value)
            elif isinstance(value, torch.Tensor) and value.is_cuda and self._device_type == "cuda":
                value = value.to(torch.float32 if types[key] == np.float32 else torch.int64).contiguous()
                feeds[key] = value  # keeps the memory alive until the run ends
                binding.bind_input(key, "cuda", value.device.index or 0, types[key], tuple(value.shape), value.data_ptr())
            else:
                binding.bind_cpu_input(key, _host(value, types[key]))
        for name in self._outputs[graph]:
            binding.bind_output(name, self._device_type if name in on_device else "cpu",
                                self.device_id if name in on_device else 0)
        session.run_with_iobinding(binding)
        return [value if name in on_device else value.numpy()
                for name, value in zip(self._outputs[graph], binding.get_outputs())]

    def encode(self, batch: torch.Tensor) -> Any:
        (embedding,) = self._run("image_encoder", {"image": batch}, on_device=("embedding",))
        return embedding if self.io_binding else torch.from_numpy(embedding)

    def prompt(self, embeddings: Any) -> tuple[torch.Tensor, torch.Tensor]:
        logits, tokens = self._run("prompter", {"embedding": embeddings})
        return torch.from_numpy(logits).float(), torch.from_numpy(tokens)

    def decode(self, embeddings: Any, image_index: torch.Tensor, tokens: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        low_res, ious = self._run("mask_decoder", {"embedding": embeddings, "image_index": image_index,
                                                   "tokens": tokens})
        return torch.from_numpy(low_res).float(), torch.from_numpy(ious).float()


def _host(value: Any, dtype) -> np.ndarray:
    """A torch tensor (any device/dtype) or array -> a contiguous numpy array of the graph input's type."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        value = value.numpy()
    return np.ascontiguousarray(value, dtype=dtype)
