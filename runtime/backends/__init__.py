"""Inference backends behind one interface (see base.py): torch, cudagraph, onnxruntime, tensorrt."""

from __future__ import annotations

BACKENDS = {
    "torch": "runtime.backends.torch_backend:TorchBackend",
    "onnxruntime": "runtime.backends.onnx_backend:OnnxBackend",
    "tensorrt": "runtime.backends.tensorrt_backend:TensorRTBackend",
    "cudagraph": "runtime.backends.cudagraph_backend:CudaGraphBackend",
}


def load_backend(name: str, checkpoint, device: str = "cpu", **kwargs):
    """Instantiate backend `name` for a checkpoint directory."""
    import importlib

    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(checkpoint, device=device, **kwargs)
