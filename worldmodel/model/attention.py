"""Self-attention (QK-norm, RoPE, optional KV memory) and cross-attention to a prompt.

Layouts: tokens x [B, L, dim]; per-head tensors q/k/v [B, L, heads, head_dim].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.model.layers import RMSNorm
from worldmodel.model.rope import apply_rope


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None) -> torch.Tensor:
    """q [B, Lq, H, D], k/v [B, Lk, H, D]; mask: None, a bool tensor broadcastable to
    [B, H, Lq, Lk] (True = may attend), or a FlexAttention BlockMask. Returns [B, Lq, H, D]."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if mask is not None and not isinstance(mask, torch.Tensor):
        from worldmodel.model.flex import flex_attention

        out = flex_attention(q, k, v, block_mask=mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2)


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

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Project tokens; keys come out already rotated to their absolute positions."""
        shape = (*x.shape[:2], self.heads, self.head_dim)
        q = apply_rope(self.norm_q(self.q(x)).view(shape), cos, sin)
        k = apply_rope(self.norm_k(self.k(x)).view(shape), cos, sin)
        v = self.v(x).view(shape)
        return q, k, v

    def forward(self, x, cos, sin, mask=None, memory_k=None, memory_v=None, memory_valid=None):
        """x [B, L, dim]. With memory: memory_k/v [B, S*N, H, D] (keys post-RoPE), memory_valid
        [S*N] or [B, S*N] bool, or None when every memory token is valid; the L new tokens attend
        to all of themselves plus valid memory tokens (`mask`, if given, is over the new tokens
        only). Returns (out [B, L, dim], k, v)."""
        q, k, v = self.qkv(x, cos, sin)
        if memory_k is not None and memory_k.shape[1] > 0:
            keys = torch.cat([memory_k.to(k.dtype), k], dim=1)
            values = torch.cat([memory_v.to(v.dtype), v], dim=1)
            if memory_valid is None and mask is None:  # nothing to mask: the fused SDPA kernels
                return self.o(attend(q, keys, values).flatten(2)), k, v
            L = x.shape[1]
            if memory_valid is None:
                memory_valid = torch.ones(memory_k.shape[1], dtype=torch.bool, device=x.device)
            valid = memory_valid if memory_valid.dim() == 2 else memory_valid[None]
            mem_mask = valid[:, None, None, :].expand(valid.shape[0], 1, L, valid.shape[1])
            own = torch.ones(1, 1, L, L, dtype=torch.bool, device=x.device) if mask is None else mask.view(1, 1, L, L)
            full_mask = torch.cat([mem_mask, own.expand(mem_mask.shape[0], 1, L, L)], dim=-1)
            out = attend(q, keys, values, full_mask)
        else:
            out = attend(q, k, v, mask)
        return self.o(out.flatten(2)), k, v


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
        q = self.norm_q(self.q(x)).view(b, -1, self.heads, self.head_dim)
        k = self.norm_k(self.k(context)).view(b, -1, self.heads, self.head_dim)
        v = self.v(context).view(b, -1, self.heads, self.head_dim)
        return self.o(attend(q, k, v).flatten(2))


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
