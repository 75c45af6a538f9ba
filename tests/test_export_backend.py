"""The onnxruntime backend follows the PyTorch backend step for step."""

import numpy as np
import pytest
import torch

from export.manifest import ExportError, StaleExportError, checkpoint_hash
from export_helpers import checkpoint, copy_of, exported, make_checkpoint, random_block
from runtime.backends import load_backend
from runtime.backends.graph_session import export_cache


def backends(strategy="mag", precision="fp32"):
    torch_backend = load_backend("torch", checkpoint(strategy), "cpu")
    onnx_backend = load_backend("onnxruntime", checkpoint(strategy), "cpu", export_dir=exported(strategy, precision))
    return torch_backend, onnx_backend


def assert_same_memory(a, b, atol=1e-4):
    ma, mb = a.rollout.memory, b.memory
    assert a.memory_state() == b.memory_state()
    used = ma.used_slots()
    assert len(used) > 0
    scale = ma.k[:, :, used].abs().max()
    torch.testing.assert_close(mb.k[:, :, used].float(), ma.k[:, :, used], rtol=0, atol=atol * scale)
    torch.testing.assert_close(mb.v[:, :, used].float(), ma.v[:, :, used], rtol=0, atol=atol * scale)


def assert_same_frames(a, b):
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, f"frames differ: max {diff.max()}, {(diff > 0).mean():.2%}"


def test_three_block_rollout_equals_pytorch():
    torch_backend, onnx_backend = backends()
    a, b = torch_backend.new_session(seed=5), onnx_backend.new_session(seed=5)
    rng = np.random.default_rng(0)
    for block in range(3):
        actions, poses = random_block(rng)
        scene = [None, 2, -1][block]
        frames_torch, frames_onnx = a.step(actions, poses, scene), b.step(actions, poses, scene)
        assert frames_onnx.shape == (3, 24, 32, 3) and frames_onnx.dtype == np.uint8
        assert_same_frames(frames_torch, frames_onnx)
        assert a.next_frame == b.next_frame == 3 * (block + 1)
    assert_same_memory(a, b)
    assert b.memory_state()["used"] == 3  # mag keeps one frame per block
    assert_same_frames(a.decode_slot(1), b.decode_slot(1))


def test_long_rollout_with_retrieval_and_eviction_stays_with_pytorch():
    """Past the attention budget (12 slots) the strategy retrieves by pose, past the capacity (24)
    it evicts: the host logic is shared, so the same slots are chosen and the memories agree."""
    torch_backend, onnx_backend = backends()
    a, b = torch_backend.new_session(seed=1), onnx_backend.new_session(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(27):
        actions, poses = random_block(rng)
        frames_torch, frames_onnx = a.step(actions, poses, None), b.step(actions, poses, None)
    assert b.memory_state()["evictions"] > 0
    assert_same_memory(a, b, atol=1e-3)
    assert_same_frames(frames_torch, frames_onnx)


def test_window_strategy_with_observed_frames_equals_pytorch():
    torch_backend, onnx_backend = backends("window")
    a, b = torch_backend.new_session(seed=2), onnx_backend.new_session(seed=2)
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)
    actions = np.concatenate([random_block(rng)[0] for _ in range(2)])
    a.observe(frames, actions, None)
    b.observe(frames, actions, None)
    for _ in range(2):
        actions, poses = random_block(rng)
        assert_same_frames(a.step(actions, poses, 1), b.step(actions, poses, 1))
    assert b.memory_state()["used"] == 9 and b.memory_state()["evictions"] == 3  # 3 sinks + a window of 6
    assert_same_memory(a, b)


def test_fp16_session_runs_close_to_fp32():
    torch_backend, onnx_backend = backends("mag", "fp16")
    a, b = torch_backend.new_session(seed=5), onnx_backend.new_session(seed=5)
    assert b.memory.k.dtype == torch.float16 and onnx_backend.bytes_per_slot() * 2 == torch_backend.bytes_per_slot()
    rng = np.random.default_rng(0)
    for _ in range(2):
        actions, poses = random_block(rng)
        diff = np.abs(a.step(actions, poses, None).astype(int) - b.step(actions, poses, None))
    assert diff.mean() < 2.0


def test_load_backend_from_a_checkpoint_uses_the_export_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MAGWORLD_CACHE", str(tmp_path))
    ckpt = checkpoint()
    cached = export_cache() / f"{checkpoint_hash(ckpt)['sha256'][:16]}-fp32"
    cached.parent.mkdir(parents=True)
    copy_of(exported(), "cache-source").rename(cached)
    backend = load_backend("onnxruntime", ckpt, "cpu")
    assert backend.export_dir == cached and backend.name == "onnxruntime"
    session = backend.new_session()
    assert session.step(*random_block(np.random.default_rng(0)), None).shape == (3, 24, 32, 3)
    # An export directory alone is enough (what a game engine ships).
    assert load_backend("onnxruntime", exported(), "cpu").new_session().next_frame == 0


def test_the_export_cache_can_be_chosen_and_is_always_named(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MAGWORLD_CACHE", str(tmp_path / "from-the-environment"))
    ckpt = checkpoint()
    chosen = tmp_path / "chosen"
    cached = chosen / f"{checkpoint_hash(ckpt)['sha256'][:16]}-fp32"
    chosen.mkdir()
    copy_of(exported(), "chosen-source").rename(cached)
    capsys.readouterr()
    backend = load_backend("onnxruntime", ckpt, "cpu", cache=chosen)  # the flag wins over the variable
    assert backend.export_dir == cached
    err = capsys.readouterr().err
    assert f"cached in {cached}" in err and "--export-cache DIR or $MAGWORLD_CACHE" in err
    assert not (tmp_path / "from-the-environment").exists()


def test_export_cache_is_refused_where_nothing_is_exported(capsys):
    from worldmodel.cli import main

    assert main(["serve", "--backend", "torch", "--export-cache", "/tmp/x", "--preset", "tiny",
                 "--random-weights", "--device", "cpu"]) == 2
    assert "--export-cache is for the onnxruntime and tensorrt backends, not torch" in capsys.readouterr().err


def test_an_export_of_another_checkpoint_is_stale():
    ckpt = make_checkpoint(copy_of(checkpoint(), "retrained"), seed=9)
    with pytest.raises(StaleExportError, match="stale export.*changed: .*generator.safetensors"):
        load_backend("onnxruntime", ckpt, "cpu", export_dir=exported())


def test_sessions_the_graphs_cannot_serve_are_refused():
    _, onnx_backend = backends()
    with pytest.raises(ExportError, match="attend to 12 memory slots.*attention_budget 16"):
        onnx_backend.new_session(attention_budget=16)
    with pytest.raises(ExportError, match="made for memory strategy 'mag'.*--strategy full"):
        onnx_backend.new_session(strategy="full")
    assert onnx_backend.new_session(attention_budget=8).strategy.cfg.attention_budget == 8
