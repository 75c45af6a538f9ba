"""TensorRT engines from the exported ONNX graphs, and the engine cache.

Written to the TensorRT 10.x / 11.x Python API. Networks are strongly typed (the only mode in 11,
`NetworkDefinitionCreationFlag.STRONGLY_TYPED` in 10), so precision comes from the ONNX types:
an fp16 export gives an fp16 engine; no builder precision flags are set.

An engine only runs on the GPU model and TensorRT version it was built with, so every engine is
stored under a key of (GPU name, compute capability, TensorRT version, graph sha256):

    <cache>/<graph>-<key[:16]>.engine  and  <graph>-<key[:16]>.json  (the key's fields)

A lookup with the current key finds its engine or builds it; an engine whose recorded key no
longer matches (`load_engine`) is refused with StaleEngineError rather than crashing in
deserialisation. TensorRT cannot be installed from PyPI on the machines this project is built on:
this code is untested there (see README).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from export.manifest import ExportError, StaleExportError, load_manifest, write_manifest

WORKSPACE_BYTES = 4 << 30


class TensorRTMissingError(ExportError):
    pass


class StaleEngineError(StaleExportError):
    """A cached engine was built for another GPU, TensorRT version or graph."""


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTMissingError(
            "TensorRT is not installed: `import tensorrt` failed. TensorRT cannot be installed from PyPI here "
            "(the PyPI wheels only download from NVIDIA's index); install TensorRT 10 or 11 with its Python "
            f"bindings from NVIDIA on a machine with an NVIDIA GPU, or use the onnxruntime backend. ({e})"
        ) from None
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise TensorRTMissingError(f"TensorRT {trt.__version__} is too old: magworld needs TensorRT 10 or 11")
    return trt


def engine_key(graph_sha256: str, trt_version: str | None = None, gpu: dict | None = None) -> dict:
    """The fields an engine depends on, and their hash."""
    if trt_version is None:
        trt_version = import_tensorrt().__version__
    if gpu is None:
        gpu = current_gpu()
    fields = {"gpu": gpu["name"], "compute_capability": gpu["compute_capability"], "tensorrt": trt_version,
              "graph_sha256": graph_sha256}
    fields["key"] = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return fields


def current_gpu(device: int | None = None) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise ExportError("TensorRT engines need an NVIDIA GPU, and PyTorch sees no CUDA device")
    index = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(index)
    return {"name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


def build_engine(onnx_path: str | Path, workspace_bytes: int = WORKSPACE_BYTES) -> bytes:
    """Parse an ONNX file (external data beside it is found by the parser) and build a serialised engine."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # deprecated and always on in TensorRT 11
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path}:\n  {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    return bytes(serialized)


def cached_engine(cache_dir: str | Path, graph: str, onnx_path: str | Path, graph_sha256: str,
                  rebuild: bool = False, progress=None) -> Path:
    """The engine file for `graph` under the current key, built (and stored) if missing."""
    key = engine_key(graph_sha256)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{graph}-{key['key'][:16]}"
    engine, meta = cache_dir / f"{stem}.engine", cache_dir / f"{stem}.json"
    if rebuild or not (engine.is_file() and meta.is_file()):
        if progress:
            progress(f"building TensorRT engine {engine.name} ({key['gpu']}, TensorRT {key['tensorrt']})")
        data = build_engine(onnx_path)
        tmp = engine.with_name(engine.name + ".partial")
        tmp.write_bytes(data)
        os.replace(tmp, engine)
        meta.write_text(json.dumps(key, indent=2) + "\n")
    return engine


def check_engine(engine_path: str | Path, graph_sha256: str, current: dict | None = None) -> None:
    """Raise StaleEngineError unless the engine's recorded key is `current` (default: this
    machine's GPU and TensorRT, for `graph_sha256`)."""
    engine_path = Path(engine_path)
    meta = engine_path.with_suffix(".json")
    if not engine_path.is_file() or not meta.is_file():
        raise StaleEngineError(f"engine {engine_path} (or its {meta.name}) is missing; build it with "
                               "`magworld export --format tensorrt`")
    was = json.loads(meta.read_text())
    now = current or engine_key(graph_sha256)
    diffs = [f"{k}: engine {was.get(k)!r}, now {now[k]!r}" for k in ("gpu", "compute_capability", "tensorrt",
                                                                      "graph_sha256") if was.get(k) != now[k]]
    if diffs:
        raise StaleEngineError(f"stale TensorRT engine {engine_path.name}: " + "; ".join(diffs)
                               + " — rebuild with `magworld export --format tensorrt` (or delete the cache)")


def build_engines(export_dir: str | Path, cache_dir: str | Path | None = None, rebuild: bool = False,
                  progress=None) -> dict:
    """Build (or find in the cache) an engine for every graph of an ONNX export; record them in its
    manifest under "engines" and return the manifest. Default cache: `<export_dir>/engines`."""
    import_tensorrt()
    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    cache_dir = Path(cache_dir) if cache_dir else export_dir / "engines"
    engines = {}
    for name, g in manifest["graphs"].items():
        path = cached_engine(cache_dir, name, export_dir / g["file"], g["sha256"], rebuild, progress)
        engines[name] = {"file": os.path.relpath(path, export_dir), **json.loads(path.with_suffix(".json").read_text())}
    manifest["engines"] = engines
    write_manifest(export_dir, manifest)
    return manifest
