"""ONNX export: valid static graphs that compute what PyTorch computes, described by the manifest."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.manifest import (
    ExportError, checkpoint_hash, load_manifest, verify_graphs, write_manifest,
)
from export.onnx_export import MemoryLayout, build_wrappers, example_inputs, export_onnx
from export_helpers import ROOT, checkpoint, copy_of, exported, make_checkpoint
from worldmodel.bundle import WorldModel


def ort_run(directory, name, inputs):
    session = ort.InferenceSession(str(directory / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})


def torch_run(directory, name, inputs, precision_of_inputs=torch.float32):
    manifest = load_manifest(directory)
    model = WorldModel.load(checkpoint(manifest["memory"]["strategy"]))
    module = build_wrappers(model, MemoryLayout(**manifest["memory"]), torch.float32)[name]
    with torch.no_grad():
        out = module(*[v.float() if v.is_floating_point() else v for v in inputs.values()])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def test_every_graph_passes_the_checker_with_static_shapes_and_no_float64():
    directory = exported()
    manifest = load_manifest(directory)
    assert set(manifest["graphs"]) == {"generator_step", "memory_step", "memory_write", "decoder", "encoder"}
    for name, entry in manifest["graphs"].items():
        model = onnx.load(str(directory / entry["file"]))
        onnx.checker.check_model(model, full_check=True)
        assert {o.domain: o.version for o in model.opset_import}.get("", 0) >= 18
        for value in list(model.graph.input) + list(model.graph.output):
            dims = value.type.tensor_type.shape.dim
            assert all(d.HasField("dim_value") for d in dims), f"{name}.{value.name} has a dynamic axis"
        # TensorRT has no float64: RoPE and timestep angles must be float32 inside the graphs.
        doubles = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.DOUBLE]
        casts = [n.name for n in model.graph.node if n.op_type == "Cast"
                 and any(a.name == "to" and a.i == onnx.TensorProto.DOUBLE for a in n.attribute)]
        assert not doubles and not casts, f"{name} computes in float64: {doubles + casts}"


@pytest.mark.parametrize("name", ["generator_step", "memory_step", "memory_write", "encoder", "decoder"])
def test_onnxruntime_matches_pytorch_on_random_inputs(name):
    directory = exported()
    manifest = load_manifest(directory)
    config = WorldModel.load(checkpoint()).config
    inputs = example_inputs(config, MemoryLayout(**manifest["memory"]), torch.float32, seed=7)[name]
    got, want = ort_run(directory, name, inputs), torch_run(directory, name, inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        if w.dtype == np.uint8:  # rounding of a value within float error of .5 may flip one level
            assert np.abs(g.astype(int) - w).max() <= 1
            assert (g != w).mean() < 0.01
        else:
            assert np.abs(w).max() > 1e-2, "a graph that outputs ~zeros proves nothing"
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())


def test_memory_graphs_use_the_invalid_mask():
    """A slot marked invalid must not change the result, whatever it holds."""
    directory = exported()
    manifest = load_manifest(directory)
    inputs = example_inputs(WorldModel.load(checkpoint()).config, MemoryLayout(**manifest["memory"]),
                            torch.float32, seed=3)["generator_step"]
    inputs["memory_valid"][:] = True
    inputs["memory_valid"][-1] = False
    base = ort_run(directory, "generator_step", inputs)[0]
    inputs["memory_k"][:, :, -1] += 5.0
    inputs["memory_v"][:, :, -1] -= 5.0
    np.testing.assert_array_equal(ort_run(directory, "generator_step", inputs)[0], base)
    inputs["memory_valid"][-1] = True
    assert np.abs(ort_run(directory, "generator_step", inputs)[0] - base).max() > 1e-3


def test_manifest_describes_the_graphs_and_the_checkpoint():
    directory = exported()
    manifest = load_manifest(directory)
    verify_graphs(manifest, directory)
    cfg = manifest["config"]["model"]
    mem = manifest["memory"]
    assert mem == {"strategy": "mag", "capacity": 24, "attention_budget": 12, "slots": 12, "kept_frames": [2],
                   "writer": "memory_model"}
    n = cfg["latent_height"] * cfg["latent_width"]
    memory_shape = [cfg["layers"], 1, 12, n, cfg["heads"], cfg["dim"] // cfg["heads"]]
    step = {s["name"]: s for s in manifest["graphs"]["generator_step"]["inputs"]}
    assert step["memory_k"] == {"name": "memory_k", "shape": memory_shape, "dtype": "float32"}
    assert step["memory_valid"] == {"name": "memory_valid", "shape": [12], "dtype": "bool"}
    assert step["frame_pos"]["dtype"] == "int64" and step["sigma"]["shape"] == [1]
    write_out = {s["name"]: s for s in manifest["graphs"]["memory_write"]["outputs"]}
    assert write_out["k_new"]["shape"] == memory_shape[:2] + [1] + memory_shape[3:]
    assert manifest["graphs"]["decoder"]["outputs"][0] == {"name": "frames", "shape": [3, 24, 32, 3], "dtype": "uint8"}
    assert manifest["opset"] >= 18 and manifest["precision"] == "fp32"
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert manifest["checkpoint"]["sha256"] == checkpoint_hash(checkpoint())["sha256"]
    assert set(manifest["checkpoint"]["files"]) >= {"config.json", "generator.safetensors", "memory_model.safetensors"}


def test_a_manifest_that_does_not_match_its_graphs_is_refused():
    directory = copy_of(exported(), "tampered")
    manifest = load_manifest(directory)
    manifest["graphs"]["decoder"]["outputs"][0]["shape"] = [3, 24, 32, 4]
    write_manifest(directory, manifest)
    with pytest.raises(ExportError, match="decoder"):
        verify_graphs(manifest, directory)


def test_window_export_attends_to_its_sinks_and_window_and_keeps_every_frame():
    manifest = load_manifest(exported("window"))
    mem = manifest["config"]["memory"]
    # the most a window session ever holds, however large the capacity (24 here)
    assert manifest["memory"]["slots"] == mem["sink_frames"] + mem["window_frames"] < mem["capacity_frames"]
    assert manifest["memory"]["kept_frames"] == [0, 1, 2]
    assert manifest["memory"]["writer"] == "generator"
    out = {s["name"]: s["shape"] for s in manifest["graphs"]["memory_write"]["outputs"]}
    assert out["k_new"][2] == 3


def test_fp16_export_runs_in_onnxruntime_close_to_fp32():
    directory = exported("mag", "fp16")
    manifest = load_manifest(directory)
    step = {s["name"]: s["dtype"] for s in manifest["graphs"]["generator_step"]["inputs"]}
    assert step["x_t"] == step["memory_k"] == "float16" and step["sigma"] == "float32"
    onnx.checker.check_model(str(directory / "generator_step.onnx"), full_check=True)
    inputs = example_inputs(WorldModel.load(checkpoint()).config, MemoryLayout(**manifest["memory"]),
                            torch.float16, seed=7)
    for name in ("generator_step", "memory_write"):
        got, want = ort_run(directory, name, inputs[name]), torch_run(directory, name, inputs[name])
        for g, w in zip(got, want):
            assert g.dtype == np.float16
            np.testing.assert_allclose(g.astype(np.float32), w, rtol=0, atol=5e-3 * np.abs(w).max())


def test_bf16_export_is_valid_onnx():
    # onnxruntime's CPU kernels do not run bf16 graphs; TensorRT does (untested here).
    out = ROOT / "export-bf16"
    export_onnx(checkpoint(), out, "bf16", graphs=["generator_step", "decoder"])
    manifest = load_manifest(out)
    for name in ("generator_step", "decoder"):
        onnx.checker.check_model(str(out / f"{name}.onnx"), full_check=True)
    step = {s["name"]: s["dtype"] for s in manifest["graphs"]["generator_step"]["inputs"]}
    assert step["x_t"] == "bfloat16" and step["memory_valid"] == "bool"


def test_clear_errors():
    with pytest.raises(ExportError, match="unsupported precision 'int8'.*fp32, fp16, bf16"):
        export_onnx(checkpoint(), ROOT / "never", "int8")
    with pytest.raises(ExportError, match="opset >= 18"):
        export_onnx(checkpoint(), ROOT / "never", opset=17)
    bad = make_checkpoint(ROOT / "mismatched")
    config = json.loads((bad / "config.json").read_text())
    config["model"]["ffn_dim"] = 48
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="cannot export .*: .* does not fit the model"):
        export_onnx(bad, ROOT / "never")
    # A missing checkpoint says so first, not that its weights do not fit.
    with pytest.raises(ExportError, match=r"^cannot export \S+: no checkpoint at "):
        export_onnx(ROOT / "nothing-here", ROOT / "never")
    assert not (ROOT / "never").exists()
