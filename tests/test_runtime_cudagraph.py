"""The CUDA-graph backend follows the PyTorch backend step for step.

On this CPU machine its runner calls the networks eagerly over the same fixed buffers the CUDA
graphs are captured over, so what is checked here is the plan (buffers, host logic, prompts,
slot gathering); the capture itself runs on a GPU (`magworld bench serve --backend cudagraph`).
"""

import numpy as np
import pytest
import torch

from export_helpers import checkpoint, random_block
from runtime.backends import load_backend
from test_export_backend import assert_same_frames, assert_same_memory


def pair(strategy="mag"):
    return load_backend("torch", checkpoint(strategy), "cpu"), load_backend("cudagraph", checkpoint(strategy), "cpu")


def test_rollout_with_retrieval_and_eviction_equals_pytorch():
    torch_backend, graph_backend = pair()
    assert graph_backend.precision == "fp32" and graph_backend.runner.capture is False
    a, b = torch_backend.new_session(seed=4), graph_backend.new_session(seed=4)
    rng = np.random.default_rng(4)
    for block in range(27):  # past the attention budget (retrieval) and the capacity (eviction)
        actions, poses = random_block(rng)
        scene = [None, 2, -1][block % 3]
        assert_same_frames(a.step(actions, poses, scene), b.step(actions, poses, scene))
    assert b.memory_state()["evictions"] > 0
    assert_same_memory(a, b, atol=1e-3)
    assert_same_frames(a.decode_slot(int(a.memory_state()["slots"][0]["slot"])),
                       b.decode_slot(int(b.memory_state()["slots"][0]["slot"])))


@pytest.mark.parametrize("strategy", ["window", "full"])
def test_other_strategies_equal_pytorch(strategy):
    torch_backend, graph_backend = pair(strategy)
    observe_then_step_alike(torch_backend.new_session(seed=2), graph_backend.new_session(seed=2))


def observe_then_step_alike(a, b):
    """Sessions a (torch) and b (cudagraph) observe the same 2 blocks, then make the same 4."""
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)
    actions, poses = np.concatenate([random_block(rng)[0]] * 2), None
    a.observe(frames, actions, poses)
    b.observe(frames, actions, poses)
    for _ in range(4):
        actions, poses = random_block(rng)
        assert_same_frames(a.step(actions, poses, None), b.step(actions, poses, None))
    assert_same_memory(a, b, atol=1e-3)
    slot = int(a.memory_state()["slots"][-1]["slot"])
    assert_same_frames(a.decode_slot(slot), b.decode_slot(slot))  # read back by the same network


def test_bad_actions_leave_the_session_unchanged():
    _, graph_backend = pair()
    s = graph_backend.new_session(seed=0)
    rng = np.random.default_rng(0)
    s.step(*random_block(rng), None)
    before = s.memory_state()
    actions, poses = random_block(rng)
    actions[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        s.step(actions, poses, None)
    assert s.memory_state() == before and s.next_frame == 3


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        load_backend("cudagraph", checkpoint(), "cuda")


def test_a_session_may_ask_for_another_strategy():
    torch_backend = load_backend("torch", checkpoint("mag"), "cpu")
    graph_backend = load_backend("cudagraph", checkpoint("mag"), "cpu")
    a = torch_backend.new_session("window", 20, None, seed=3)
    b = graph_backend.new_session("window", 20, None, seed=3)
    rng = np.random.default_rng(3)
    for _ in range(8):
        actions, poses = random_block(rng)
        assert_same_frames(a.step(actions, poses, None), b.step(actions, poses, None))
    assert b.memory_state()["strategy"] == "window"
    assert len(graph_backend.plans) == 2  # the checkpoint's own (mag) and window with 20 slots
    assert_same_memory(a, b, atol=1e-3)


def test_the_compiled_backend_makes_the_uncompiled_ones_frames():
    """compile=True (worldmodel/model/fused.py): the same frames and memory, block for block, from an
    empty memory past the attention budget, with one compile per token path, not per memory size."""
    from worldmodel.model.fused import compiled_graphs

    plain = load_backend("cudagraph", checkpoint("mag"), "cpu")
    before = compiled_graphs()
    fused = load_backend("cudagraph", checkpoint("mag"), "cpu", compile=True)
    assert fused.compiled == "default" and plain.compiled is None
    assert fused.model.generator.token_paths is not None and plain.model.generator.token_paths is None
    budget = 4  # a plan of 4 attended slots: retrieval within a few blocks
    a, b = plain.new_session("mag", None, budget, seed=7), fused.new_session("mag", None, budget, seed=7)
    rng = np.random.default_rng(7)
    for block in range(budget + 2):  # every number of held slots 0..budget, then retrieval
        actions, poses = random_block(rng)
        assert_same_frames(a.step(actions, poses, None), b.step(actions, poses, None))
    assert b.held == budget and a.memory_state() == b.memory_state()
    torch.testing.assert_close(b.memory.k, a.memory.k, rtol=0, atol=1e-3 * float(a.memory.k.abs().max()))
    torch.testing.assert_close(b.memory.v, a.memory.v, rtol=0, atol=1e-3 * float(a.memory.v.abs().max()))
    assert compiled_graphs() - before <= 3  # attention_in, attention_out, the head (a write is not kv_only here)


def test_compiled_batched_steps_make_the_uncompiled_sessions_blocks():
    """serve --backend cudagraph --compile with several clients: the batched graphs (graph_batch.py)
    run the compiled paths at batch 4 (3 sessions, padded), one more compile per path."""
    from test_runtime_cudagraph_batch import assert_same_state, step_both

    plain = load_backend("cudagraph", checkpoint("mag"), "cpu")
    fused = load_backend("cudagraph", checkpoint("mag"), "cpu", compile=True)
    alone = [plain.new_session(seed=s) for s in (10, 11, 12)]
    together = [fused.new_session(seed=s) for s in (10, 11, 12)]
    rng = np.random.default_rng(3)
    for _ in range(3):
        assert step_both(fused, alone, together, rng) == [3, 3, 3]
    for a, b in zip(alone, together):
        assert_same_state(a, b, atol=1e-3)


def test_serve_compiles_for_the_cudagraph_backend_only(capsys):
    from worldmodel.cli import build_parser, main
    from worldmodel.cli.serve import build_backend

    assert main(["serve", "--backend", "torch", "--compile", "--preset", "tiny", "--random-weights",
                 "--device", "cpu"]) == 2
    assert "--compile is for the cudagraph backend, not torch" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--backend", "cudagraph", "--compile", "--checkpoint",
                                      str(checkpoint()), "--device", "cpu"])
    backend, _, _ = build_backend(args)
    assert backend.compiled == "default" and backend.model.generator.token_paths is not None
