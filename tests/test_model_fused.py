"""The compiled token paths (worldmodel/model/fused.py) give the plain pass (tests/reference_dit.py)
for every memory size, and compile a fixed number of graphs: not one per memory size or layer.

On this CPU torch.compile runs inductor's C++ backend. The tiny shapes at batch 1 are those of the
cudagraph backend's tests and of `bench generate --preset tiny`, so one process compiles them once
(20-45 s on 2 shared cores, cold; inductor's cache in /tmp makes a later run take seconds)."""

import copy

import pytest
import torch

import reference_dit
from helpers import clip_inputs, tiny_model
from test_model_fast_paths import close
from worldmodel.config import apply_overrides, preset
from worldmodel.model import MemoryView
from worldmodel.model.fused import compile_token_paths, compiled_graphs, token_paths


def random_memory(cfg, held: int, seed: int = 0) -> MemoryView:
    """`held` slots of random keys/values, every one valid (the cudagraph backend's prefix memory)."""
    g = torch.Generator().manual_seed(seed)
    m = cfg.model
    k, v = (torch.randn(m.layers, 1, held, m.tokens_per_frame, m.heads, m.head_dim, generator=g) for _ in range(2))
    return MemoryView(k, v, torch.ones(held, dtype=torch.bool), all_valid=True)


@pytest.fixture(scope="module")
def models():
    cfg = preset("tiny")
    eager = tiny_model(cfg, std=0.5)
    return cfg, eager, compile_token_paths(copy.deepcopy(eager)), compiled_graphs()


def passes(cfg, eager, compiled, held):
    """The compiled model against the reference and against itself eager: a denoising pass with
    its K/V, and a memory write's kv_only pass, over a memory of `held` slots."""
    x, t, a = clip_inputs(cfg, batch=1, frames=3)
    pos = torch.arange(held, held + 3)
    memory = random_memory(cfg, held, seed=held)
    with torch.no_grad():
        close(compiled(x, t, a, pos, memory=memory, return_kv=True, validate=False),
              reference_dit.forward(eager, x, t, a, pos, memory=memory, return_kv=True))
        got = compiled(x, torch.zeros_like(t), a, pos, memory=memory, kv_only=True, validate=False)
        want = eager(x, torch.zeros_like(t), a, pos, memory=memory, kv_only=True, validate=False)
    for (gk, gv), (wk, wv) in zip(got, want):
        close(gk, wk)
        close(gv, wv)


def test_the_compiled_paths_give_the_reference_pass_for_every_memory_size(models):
    cfg, eager, compiled, _ = models
    assert compiled.token_paths is token_paths("default") and all(b.token_paths for b in compiled.blocks)
    assert eager.token_paths is None
    for held in range(4):  # no memory, then 1..3 slots
        passes(cfg, eager, compiled, held)


def test_compiles_are_four_whatever_the_memory_size_and_the_layers(models):
    """attention_in (with q, and kv_only without), attention_out and the head, once for all of them:
    another memory size, another model of the same widths with more layers, compile nothing."""
    cfg, eager, compiled, start = models
    passes(cfg, eager, compiled, 2)
    before = compiled_graphs()
    assert before - start <= 4  # (this process compiles nothing else meanwhile)
    for held in (5, 7):
        passes(cfg, eager, compiled, held)
    deeper = apply_overrides(cfg, ["model.layers=4"])
    eager4 = tiny_model(deeper, seed=1, std=0.5)
    passes(deeper, eager4, compile_token_paths(copy.deepcopy(eager4)), 3)
    assert compiled_graphs() == before


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="max-autotune-no-cudagraphs"):
        token_paths("reduce-overhead")  # inductor's own CUDA graphs would nest in the backend's
