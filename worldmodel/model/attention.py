"""Self-attention (QK-norm, RoPE, optional KV memory) and cross-attention to a prompt.

Layouts: tokens x [B, L, dim]; inside attention, per-head tensors are heads-first
q/k/v [B, H, L, head_dim] (what SDPA reads, so no transposed copies on the way in).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.model.layers import RMSNorm
from worldmodel.model.rope import rotate_heads_first


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None) -> torch.Tensor:
    """q [B, H, Lq, D], k/v [B, H, Lk, D]; mask: None, a bool tensor broadcastable to
    [B, H, Lq, Lk] (True = may attend), or a FlexAttention BlockMask. Returns [B, Lq, H*D]."""
    if mask is not None and not isinstance(mask, torch.Tensor):
        from worldmodel.model.flex import flex_attention

        out = flex_attention(q, k, v, block_mask=mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float = 1e-6):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def qkv(self, x: torch.Tensor, rot):
        """Project tokens x [B, L, dim] to heads-first q, k, v [B, H, L, D]; rot is
        `rope_rotation` of the L tokens' positions, so keys come out rotated to their absolute
        positions."""
        q = rotate_heads_first(self.norm_q(self.q(x)).view(self._heads(x)), rot)
        return (q, *self.kv(x, rot))

    def kv(self, x: torch.Tensor, rot):
        """Only the keys and values of `qkv` (what a memory write keeps of the last layer)."""
        k = rotate_heads_first(self.norm_k(self.k(x)).view(self._heads(x)), rot)
        return k, self.v(x).view(self._heads(x)).transpose(1, 2)

    def _heads(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        return (*x.shape[:2], self.heads, self.head_dim)

    def forward(self, x, rot, mask=None, memory=None, layer: int = 0):
        """x [B, L, dim]. memory: a MemoryView (worldmodel.model.dit) whose layer `layer` the L
        new tokens attend to besides themselves, or None; `mask` is then over [memory ; new]
        tokens (MemoryView.attention_mask), else over the new tokens only, or None for all.
        Returns (out [B, L, dim], k, v), k/v [B, L, H, D] (k post-RoPE)."""
        q, k, v = self.qkv(x, rot)
        keys, values = (k, v) if memory is None else memory.keys_values(layer, k, v)
        return self.o(attend(q, keys, values, mask)), k.transpose(1, 2), v.transpose(1, 2)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float = 1e-6):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x [B, L, dim], context [B, Lc, dim] -> [B, L, dim]."""
        b = x.shape[0]

        def heads(t):
            return t.view(b, -1, self.heads, self.head_dim).transpose(1, 2)

        q = heads(self.norm_q(self.q(x)))
        k = heads(self.norm_k(self.k(context)))
        return self.o(attend(q, k, heads(self.v(context))))


SDPA_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")


def sdpa_preference(name: str):
    """A context in which SDPA tries backend `name` first (cuDNN's fused attention is faster than
    flash on Hopper for long sequences; which one wins is measured, not assumed: `magworld bench
    generate --attention`), falling back to the others where it cannot run a shape. "auto" keeps
    PyTorch's own order. It holds for CUDA-graph captures made inside it too."""
    import contextlib

    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    if name not in order:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(SDPA_BACKENDS)}")
    first = order[name]
    try:
        return sdpa_kernel([first, *(b for b in order.values() if b != first)], set_priority=True)
    except TypeError:  # torch < 2.6 has no priority order: only that backend
        return sdpa_kernel([first])
