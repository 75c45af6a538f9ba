"""Export: the networks of the inference loop as static-shape ONNX graphs, TensorRT engines built
from them, and the manifest that describes both (see README "Export")."""

from export.manifest import ExportError, StaleExportError, load_manifest
from export.onnx_export import PRECISIONS, export_onnx

__all__ = ["ExportError", "StaleExportError", "PRECISIONS", "export_onnx", "load_manifest"]
