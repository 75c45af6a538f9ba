"""The fast paths of the generator's forward pass give what the plain formulation gives
(tests/reference_dit.py), to float rounding: with and without memory, masked and unmasked,
per-sample RoPE, per-frame context, with and without autograd."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import reference_dit
from helpers import clip_inputs, tiny_model
from worldmodel.memory import KVMemory
from worldmodel.model import MemoryView
from worldmodel.model.layers import RMSNorm, gelu_tanh
from worldmodel.model.masks import block_causal
from worldmodel.model.rope import apply_rope, rope_angles, rope_rotation, rotate_heads_first

TOL = dict(rtol=1e-4, atol=1e-4)  # weights of std 0.5: a 0.1% change of the new keys moves outputs by ~4e-3


def close(got, want):
    if isinstance(want, tuple):  # (v, kvs)
        close(got[0], want[0])
        for (gk, gv), (wk, wv) in zip(got[1], want[1]):
            torch.testing.assert_close(gk, wk, **TOL)
            torch.testing.assert_close(gv, wv, **TOL)
    else:
        torch.testing.assert_close(got, want, **TOL)


def both(model, *args, **kwargs):
    """The model and the reference on the same inputs, without autograd and with it."""
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            close(model(*args, validate=False, **kwargs), reference_dit.forward(model, *args, **kwargs))


@pytest.fixture
def model(tiny):
    return tiny_model(tiny, std=0.5)


def memory_of(model, tiny, slots=4, batch=2, held=None):
    """A KVMemory of `slots` slots, `held` of them (default all) written with real keys/values."""
    mem = KVMemory(tiny.model, capacity=slots, batch=batch)
    x, t, a = clip_inputs(tiny, batch=batch, frames=3, seed=5)
    with torch.no_grad():
        _, kvs = model(x, torch.zeros_like(t), a, torch.arange(3), return_kv=True)
    k = torch.stack([kv[0][:, -1:] for kv in kvs])
    v = torch.stack([kv[1][:, -1:] for kv in kvs])
    for s in range(slots if held is None else held):
        mem.write([s], k, v, [s])
    return mem


def test_without_memory_plain_and_block_causal(model, tiny):
    x, t, a = clip_inputs(tiny, frames=6)
    pos = torch.arange(10, 16)
    both(model, x, t, a, pos)
    both(model, x, t, a, pos, frame_mask=block_causal(6, 3), return_kv=True)
    both(model, x, t, a, pos, scene=torch.tensor([1, -1]))


def test_with_memory_all_valid_masked_and_partial(model, tiny):
    mem = memory_of(model, tiny)
    x, t, a = clip_inputs(tiny, frames=3)
    pos = torch.arange(12, 15)
    full = mem.view()
    assert full.all_valid
    both(model, x, t, a, pos, memory=full, return_kv=True)
    both(model, x, t, a, pos, memory=replace(full, all_valid=False))
    both(model, x, t, a, pos, memory=full, frame_mask=torch.tril(torch.ones(3, 3, dtype=torch.bool)))
    half = memory_of(model, tiny, held=2)
    both(model, x, t, a, pos, memory=MemoryView(half.k, half.v, half.valid), return_kv=True)


def test_per_sample_rope_per_sample_validity_and_per_frame_context(model, tiny):
    mem = memory_of(model, tiny)
    x, t, a = clip_inputs(tiny, frames=3)
    tables = [model.rope_tables(torch.arange(p, p + 3)) for p in (4, 40)]
    rope = (torch.stack([c for c, _ in tables]), torch.stack([s for _, s in tables]))
    valid = torch.tensor([[True, True, False, True], [True, False, True, True]])
    view = MemoryView(mem.k, mem.v, valid)
    prompt = torch.randn(2, 3, 5, tiny.model.text_dim)  # one context per frame
    both(model, x, t, a, torch.arange(4, 7), prompt, memory=view, rope=rope, return_kv=True)


def test_the_steps_of_a_block_reuse_the_memory_buffers_until_the_memory_is_written(model, tiny):
    """The buffers keys_values makes are the view's own: each step of a block writes only its
    new tokens, so later steps read the memory right; a write to the memory's tensors (the view
    of a full memory is the memory itself) makes them anew."""
    mem = memory_of(model, tiny)
    view = mem.view()
    x, t, a = clip_inputs(tiny, frames=3)
    pos = torch.arange(12, 15)
    with torch.no_grad():
        for step in range(3):
            close(model(x, t * step / 3, a, pos, memory=view), reference_dit.forward(model, x, t * step / 3, a, pos, memory=view))
        k, v = (torch.randn_like(mem.k[:, :, :1]) for _ in range(2))
        mem.write([1], k, v, [20])
        assert view.k is mem.k
        close(model(x, t, a, pos, memory=view), reference_dit.forward(model, x, t, a, pos, memory=view))


def test_rope_rotation_equals_apply_rope():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 150, 4, 64, generator=g)
    cos, sin = rope_angles(torch.arange(3, 6), (5, 10), 64)
    want = apply_rope(x, cos, sin).transpose(1, 2)
    torch.testing.assert_close(rotate_heads_first(x, rope_rotation(cos, sin)), want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rotate_heads_first(x, (cos, sin)), want)  # the real form, for export
    cb, sb = cos[None].expand(2, -1, -1), sin[None].expand(2, -1, -1)
    torch.testing.assert_close(rotate_heads_first(x, rope_rotation(cb, sb)), want, rtol=1e-6, atol=1e-6)


def test_cpu_gelu_and_rms_norm_equal_the_plain_ones():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 150, 256, generator=g) * 4
    with torch.no_grad():
        torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"), rtol=1e-5, atol=2e-6)
        norm = RMSNorm(256)
        norm.weight.normal_()
        torch.testing.assert_close(norm(x), reference_dit.rms(norm, x), rtol=1e-5, atol=1e-6)


def test_kv_only_gives_the_keys_and_values_of_return_kv(model, tiny):
    """What a memory write asks for: the last layer stops at its keys/values, no head."""
    mem = memory_of(model, tiny)
    x, t, a = clip_inputs(tiny, frames=3)
    pos = torch.arange(12, 15)
    with torch.no_grad():
        _, want = model(x, torch.zeros_like(t), a, pos, memory=mem.view(), return_kv=True)
        got = model(x, torch.zeros_like(t), a, pos, memory=mem.view(), kv_only=True)
    assert len(got) == len(want) == tiny.model.layers
    for (gk, gv), (wk, wv) in zip(got, want):
        assert gk.shape == wk.shape == (2, 3, tiny.model.tokens_per_frame, tiny.model.heads, tiny.model.head_dim)
        torch.testing.assert_close(gk, wk, rtol=0, atol=0)
        torch.testing.assert_close(gv, wv, rtol=0, atol=0)
