"""The TensorRT backend: engines built from the ONNX export (export/tensorrt_build.py).

Each graph is one engine; each session gets one execution context per engine with every named
I/O tensor bound once (`set_tensor_address`) to the session's fixed PyTorch buffers, and runs it
with `execute_async_v3` on PyTorch's current CUDA stream, so the sampler's tensor work and the
engines are ordered without extra synchronisation.

TensorRT cannot be installed from PyPI on the machines this project is built on: this backend is
written to the TensorRT 10/11 API and untested until it runs where TensorRT is installed.
"""

from __future__ import annotations

import torch

from export.manifest import ExportError
from export.tensorrt_build import StaleEngineError, build_engines, check_engine, import_tensorrt
from runtime.backends.graph_session import GraphBackend, resolve_export


class TrtRunner:
    def __init__(self, export_dir, manifest: dict, device: str = "cuda"):
        trt = import_tensorrt()
        dev = torch.device(device)
        if dev.type != "cuda":
            raise ExportError(f"the tensorrt backend runs on a CUDA device, not {device!r}")
        self.device = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(self.device)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engines = {}
        for name, g in manifest["graphs"].items():
            entry = manifest.get("engines", {}).get(name)
            if entry is None:
                raise StaleEngineError(f"the export in {export_dir} has no TensorRT engine for {name!r}; "
                                       "build it with `magworld export --format tensorrt`")
            path = export_dir / entry["file"]
            check_engine(path, g["sha256"])
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise StaleEngineError(f"TensorRT could not deserialise {path}; rebuild it with "
                                       "`magworld export --format tensorrt` (or delete the engine cache)")
            self.engines[name] = engine

    def bind(self, graph: str, tensors: dict[str, torch.Tensor]):
        engine = self.engines[graph]
        context = engine.create_execution_context()
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            t = tensors[name]
            shape = tuple(engine.get_tensor_shape(name))
            if shape != tuple(t.shape) or not t.is_contiguous() or t.device != self.device:
                raise ValueError(f"{graph}.{name}: engine wants {shape} on {self.device}, buffer is "
                                 f"{tuple(t.shape)} on {t.device}")
            context.set_tensor_address(name, t.data_ptr())

        def run():
            if not context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
                raise RuntimeError(f"TensorRT failed to enqueue {graph}")

        run.context = context  # the context must live as long as the bound call
        return run


class TensorRTBackend(GraphBackend):
    """`checkpoint`: as for the onnxruntime backend (a checkpoint or an export directory). Engines
    missing from the export are built on first use into `<export>/engines`."""

    name = "tensorrt"

    def __init__(self, checkpoint, device: str = "cuda", export_dir=None, precision: str = "fp32", cache=None):
        import_tensorrt()
        export_dir, manifest = resolve_export(checkpoint, export_dir, precision, cache)
        if not manifest.get("engines"):
            manifest = build_engines(export_dir, progress=print)
        super().__init__(TrtRunner(export_dir, manifest, device), manifest, export_dir)
