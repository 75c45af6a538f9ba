"""manifest.json: what an export directory holds, and what it was made from.

    {
      "format": "magworld-export-v1",
      "precision": "fp32", "opset": 18,
      "checkpoint": {"path": ..., "sha256": ..., "files": {name: sha256}},
      "config": {...},                     the WorldModelConfig, memory section as exported
      "memory": {"strategy", "capacity", "attention_budget", "slots", "kept_frames", "writer"},
      "versions": {"torch", "onnx", "onnxruntime", "magworld", "python"},
      "prompts": "prompts.safetensors",    null/scene prompt tables for the `prompt` input
      "graphs": {name: {"file", "sha256", "external_data": [...],
                        "inputs": [{"name", "shape", "dtype"}], "outputs": [...]}},
      "engines": {name: {...}}             only after a TensorRT build (export/tensorrt_build.py)
    }

The checkpoint hash covers config.json and every *.safetensors / *.index.json file of the
checkpoint directory (not `training/`), so retraining in place makes an export stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

FORMAT = "magworld-export-v1"
MANIFEST_FILE = "manifest.json"

# ONNX TensorProto element types <-> the dtype names used in the manifest (numpy's, plus bfloat16).
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64",
               16: "bfloat16"}


class ExportError(RuntimeError):
    """An export cannot be made or used as asked (bad checkpoint, precision, missing tool...)."""


class StaleExportError(ExportError):
    """The export (or an engine built from it) was made from another checkpoint, GPU or tool version."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_files(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    files = [directory / "config.json"] + sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.index.json"))
    return [f for f in files if f.is_file()]


def checkpoint_hash(directory: str | Path) -> dict:
    """{"sha256": hash over (name, file hash) pairs, "files": {name: sha256}}."""
    files = {f.name: sha256_file(f) for f in checkpoint_files(directory)}
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return {"sha256": h.hexdigest(), "files": files}


def graph_io(path: str | Path) -> dict:
    """Inputs and outputs of an ONNX graph as manifest entries (reads the graph without weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def entries(values):
        out = []
        for v in values:
            tt = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim]
            out.append({"name": v.name, "shape": shape, "dtype": ONNX_DTYPES.get(tt.elem_type, str(tt.elem_type))})
        return out

    return {"inputs": entries(model.graph.input), "outputs": entries(model.graph.output)}


def tool_versions() -> dict:
    import onnx
    import torch

    from worldmodel import __version__

    versions = {"magworld": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "onnx": onnx.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        versions["onnxruntime"] = None
    return versions


def write_manifest(directory: str | Path, manifest: dict) -> None:
    path = Path(directory) / MANIFEST_FILE
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


def load_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(f"{directory} is not a magworld export: no {MANIFEST_FILE} (make one with `magworld export`)")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: not valid JSON ({e}); export again with `magworld export`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ExportError(f"{path} has format {found!r}; this magworld reads {FORMAT!r} (re-export)")
    return manifest


def verify_checkpoint(manifest: dict, checkpoint: str | Path) -> None:
    """Raise StaleExportError when `checkpoint` is not the one the export was made from."""
    now = checkpoint_hash(checkpoint)
    was = manifest["checkpoint"]
    if now["sha256"] != was["sha256"]:
        changed = sorted(n for n in set(now["files"]) | set(was["files"]) if now["files"].get(n) != was["files"].get(n))
        raise StaleExportError(
            f"stale export: it was made from a checkpoint with hash {was['sha256'][:12]}, but {checkpoint} now has "
            f"{now['sha256'][:12]} (changed: {', '.join(changed)}); run `magworld export` again"
        )


def verify_graphs(manifest: dict, directory: str | Path) -> None:
    """Raise ExportError unless every graph file exists and has the inputs/outputs the manifest lists."""
    directory = Path(directory)
    for name, g in manifest["graphs"].items():
        path = directory / g["file"]
        if not path.is_file():
            raise ExportError(f"graph {name!r} is missing: {path}")
        io = graph_io(path)
        for key in ("inputs", "outputs"):
            if io[key] != g[key]:
                raise ExportError(f"graph {name!r} ({path.name}) has {key} {io[key]}, the manifest says {g[key]}")
