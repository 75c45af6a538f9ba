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
