"""Inference backends: the three model stages (encode, prompt, decode) run by a `Runner`.

Everything around them — preprocessing, the keep rule, class filter, duplicate merging, mask upsampling,
overlap painting, label/instance maps, settings — is PartSegmenter's one code path, shared by every
backend, so a result is the same object with the same settings whichever backend computed it.

  torch        base.Runner over the PyTorch WPSSAM (torch_runner.TorchRunner)
  onnxruntime  the graphs of `wps-sam export --onnx` (onnx_runner.OnnxRunner), exported on first use
               into a cache folder when no ONNX folder is given (onnx_loading.py)

Torch-free on purpose: the CLI's flags and the node's parameters read these names.
"""
from __future__ import annotations

BACKENDS = ("torch", "onnxruntime")
DEFAULT_BACKEND = "torch"
# onnx_providers: short names a user writes -> onnxruntime's execution providers, in the default order of
# preference (the first one the installed onnxruntime offers runs; CPU is always there).
PROVIDER_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
                  "cpu": "CPUExecutionProvider"}
DEFAULT_PROVIDERS = ""  # "" = TensorRT if available, then CUDA, then CPU
