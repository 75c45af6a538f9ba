"""torch.compile of CausalDiT's token-by-token work, so that a captured loop replays fused kernels.

Why: in a pass of the Wan2.1-1.3B-shape loop (H200, bf16, CUDA graphs) attention takes 60 ms,
matrix products 16 ms, and 43 ms go to unfused elementwise kernels: LayerNorm and the adaLN
modulation, RMSNorm of q and k in fp32 steps, RoPE (a float copy, four products, a stack), GELU,
the gated residuals, dtype casts. Inductor fuses each run of them into a few Triton kernels.

What is compiled: only the token paths, the parts whose shapes never depend on the memory —
`DiTBlock.attention_in` (action add, norm1 + modulation, q/k/v projections, RMS norms, RoPE),
`DiTBlock.attention_out` (output projection + gated residual, cross-attention to the prompt,
norm2 + modulation, FFN, gated residual) and `CausalDiT.output` (the head). The self-attention
between them (the memory's keys and values, then SDPA) stays eager. The choice, against the
others:
  - the whole network compiled with static shapes: the cudagraph backend captures one graph per
    number of held slots n = 0..S (S = 21 at Wan size) for each graph that reads memory, so that
    would be 2 (S + 1) compiles, each of all 30 layers unrolled (not timed here: too many);
  - the memory length marked dynamic: n = 0 (no memory) and n = 1 (dynamo specialises sizes 0
    and 1) still compile apart, and the attention of a symbolic length is a risk we do not need;
  - the token paths: one compile each per token shape, shared by all 30 layers (parameters are
    graph inputs, not constants: dynamo inlines nn modules) and by every n, so a model compiles
    4 small graphs (attention_in with and without q, attention_out, output) whatever S is, per
    batch size (the batched graphs of runtime/backends/graph_batch.py add sizes 2, 4, 8).
    Attention stays on SDPA's fused kernels with no mask (the cudagraph backend's prefix memory),
    as it is eager. Cross-attention's SDPA is traced inside attention_out, at a fixed length (the
    prompt's tokens), and lowers to the same fused kernels. Left eager besides attention: the
    input embedding and the modulation table (per frame, not per token: small), and the copy of
    the memory's keys/values in front of the new ones (MemoryView.keys_values).
Compiles are static (dynamic=False) and whole (fullgraph=True: a graph break is an error, not a
silent slowdown). Each new token shape (another model, batch or block size) is one more compile
of each path, so the recompile limit is raised to RECOMPILE_LIMIT (dynamo: 8): past it dynamo
would run the path eagerly without saying so loudly. `compiled_graphs()` counts what was made.

Inductor's own CUDA graphs stay off (mode default, or max-autotune-no-cudagraphs): the cudagraph
backend captures the passes itself, after warm-up calls that compile every path.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch

from worldmodel.model.dit import CausalDiT, DiTBlock

# "default": inductor's fusion, matrix products on cuBLAS; "max-autotune-no-cudagraphs" also tries
# Triton matmul templates (with epilogues fused) per shape, minutes more of compiling.
MODES = ("default", "max-autotune-no-cudagraphs")
RECOMPILE_LIMIT = 64


class TokenPaths(NamedTuple):
    """The compiled paths, each called as f(module, ...) like the unbound method it compiles."""

    attention_in: Callable
    attention_out: Callable
    output: Callable
    mode: str


@functools.cache
def token_paths(mode: str = "default") -> TokenPaths:
    """The compiled token paths for `mode`, made once per process and shared by every model (dynamo
    keys what it compiles by shapes and dtypes, not by module)."""
    if mode not in MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {', '.join(MODES)}")

    def compiled(fn):
        return torch.compile(fn, mode=None if mode == "default" else mode, dynamic=False, fullgraph=True)

    return TokenPaths(compiled(DiTBlock.attention_in), compiled(DiTBlock.attention_out), compiled(CausalDiT.output),
                      mode)


def compile_token_paths(model: CausalDiT, mode: str = "default") -> CausalDiT:
    """Make `model` (in place) run its token paths compiled; returns it. Compiling happens at the
    first call of each shape. Every later forward of the model uses them, with or without CUDA
    graphs."""
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    setattr(config, limit, max(getattr(config, limit), RECOMPILE_LIMIT))
    paths = token_paths(mode)
    model.token_paths = paths
    for block in model.blocks:
        block.token_paths = paths
    return model


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (all of torch.compile, not only ours)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
