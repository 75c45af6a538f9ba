"""The ONNX Runtime backend: exported graphs (export/onnx_export.py) run by onnxruntime.

Execution provider: CUDA when the device asks for it and onnxruntime-gpu is installed (ORT then
runs on PyTorch's current CUDA stream, so host-side tensor work and graphs stay in order), CPU
otherwise. Inputs and outputs are bound once per session to fixed PyTorch buffers (IO binding),
so the KV memory and latents never leave the device between steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from export.manifest import ExportError
from runtime.backends.graph_session import GraphBackend, resolve_export

NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64,
                torch.int32: np.int32, torch.bool: np.bool_, torch.uint8: np.uint8}


class OrtRunner:
    """One onnxruntime InferenceSession per graph, shared by every EngineSession of a backend."""

    def __init__(self, export_dir: Path, manifest: dict, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        want = torch.device(device)
        if want.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            print(f"onnxruntime: no CUDA execution provider (install onnxruntime-gpu); running on CPU, not {device}",
                  file=sys.stderr)
            want = torch.device("cpu")
        if want.type == "cuda":
            index = want.index if want.index is not None else torch.cuda.current_device()
            stream = torch.cuda.current_stream(index).cuda_stream
            providers = [("CUDAExecutionProvider", {"device_id": index, "user_compute_stream": str(stream)}),
                         "CPUExecutionProvider"]
            self.device, self._where = torch.device("cuda", index), ("cuda", index)
        elif want.type == "cpu":
            providers = ["CPUExecutionProvider"]
            self.device, self._where = torch.device("cpu"), ("cpu", 0)
        else:
            raise ValueError(f"the onnxruntime backend runs on cpu or cuda, not {device!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.providers = providers
        self.sessions = {}
        for name, entry in manifest["graphs"].items():
            try:
                self.sessions[name] = ort.InferenceSession(str(export_dir / entry["file"]), options, providers=providers)
            except Exception as e:  # ORT raises its own exception types; say which graph and why
                raise ExportError(f"onnxruntime cannot load graph {name!r} ({manifest['precision']}): {e}") from e

    def bind(self, graph: str, tensors: dict[str, torch.Tensor]):
        session = self.sessions[graph]
        binding = session.io_binding()
        kind, index = self._where
        for arg, bind in ((session.get_inputs(), binding.bind_input), (session.get_outputs(), binding.bind_output)):
            for spec in arg:
                t = tensors[spec.name]
                if t.dtype not in NUMPY_DTYPES:
                    raise ExportError(f"onnxruntime cannot bind {t.dtype} tensors ({graph}.{spec.name}); "
                                      "export with --precision fp32 or fp16 for this backend")
                if not t.is_contiguous() or t.device != self.device:
                    raise ValueError(f"{graph}.{spec.name}: bound buffers must be contiguous on {self.device}")
                bind(spec.name, kind, index, NUMPY_DTYPES[t.dtype], list(t.shape), t.data_ptr())

        def run():
            session.run_with_iobinding(binding)

        return run


class OnnxBackend(GraphBackend):
    """`checkpoint` is a checkpoint directory (exported on first use into the export cache — `cache`,
    else graph_session.export_cache() — or the export given by `export_dir`, which must match it)
    or an export directory itself."""

    name = "onnxruntime"

    def __init__(self, checkpoint, device: str = "cpu", export_dir=None, precision: str = "fp32",
                 threads: int | None = None, cache=None):
        export_dir, manifest = resolve_export(checkpoint, export_dir, precision, cache)
        super().__init__(OrtRunner(export_dir, manifest, device, threads), manifest, export_dir)
