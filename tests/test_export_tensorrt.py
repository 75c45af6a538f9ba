"""TensorRT: engines and the backend where TensorRT is installed; clear errors where it is not."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from export.tensorrt_build import StaleEngineError, TensorRTMissingError, check_engine, import_tensorrt
from export_helpers import ROOT, checkpoint, exported, random_block

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
NO_TRT = "TensorRT is not installed (it cannot be installed from PyPI on the machines this project is built on)"
needs_trt = pytest.mark.skipif(not (HAVE_TRT and torch.cuda.is_available()), reason=NO_TRT + ", or no CUDA GPU")


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_a_clear_error():
    from runtime.backends import load_backend
    from worldmodel.cli import main

    with pytest.raises(TensorRTMissingError, match="TensorRT is not installed"):
        import_tensorrt()
    with pytest.raises(TensorRTMissingError, match="TensorRT is not installed"):
        load_backend("tensorrt", checkpoint(), "cuda")
    out = ROOT / "trt-never"
    assert main(["export", "--checkpoint", str(checkpoint()), "--format", "tensorrt", "--out", str(out)]) == 2
    assert not out.exists()


def test_an_engine_built_elsewhere_is_stale(tmp_path):
    """The cache key check itself needs no TensorRT: an engine records what it was built for."""
    engine = tmp_path / "generator_step-0123456789abcdef.engine"
    engine.write_bytes(b"plan")
    built = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt": "10.3.0", "graph_sha256": "aa"}
    engine.with_suffix(".json").write_text(json.dumps(built))
    check_engine(engine, "aa", current=built)
    for field, value in (("gpu", "NVIDIA H200"), ("tensorrt", "11.0.0"), ("graph_sha256", "bb")):
        with pytest.raises(StaleEngineError, match=f"stale TensorRT engine.*{field}"):
            check_engine(engine, "aa", current={**built, field: value})


@needs_trt
def test_tensorrt_rollout_equals_pytorch():
    from export.tensorrt_build import build_engines
    from runtime.backends import load_backend

    manifest = build_engines(exported())
    assert set(manifest["engines"]) == set(manifest["graphs"])
    a = load_backend("torch", checkpoint(), "cuda").new_session(seed=5)
    b = load_backend("tensorrt", exported(), "cuda").new_session(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(3):
        actions, poses = random_block(rng)
        diff = np.abs(a.step(actions, poses, None).astype(int) - b.step(actions, poses, None))
        assert diff.max() <= 2
    assert a.memory_state() == b.memory_state()
