"""FlexAttention, compiled once per process (the eager version is a slow reference)."""

from __future__ import annotations

import functools

import torch


@functools.cache
def _compiled():
    from torch.nn.attention.flex_attention import flex_attention as fa

    return torch.compile(fa, dynamic=False)


def flex_attention(q, k, v, block_mask):
    """q/k/v [B, H, L, D]."""
    if torch.compiler.is_compiling():  # inside a compiled model: the compiler fuses it with the rest
        from torch.nn.attention.flex_attention import flex_attention as fa

        return fa(q, k, v, block_mask=block_mask)
    return _compiled()(q, k, v, block_mask=block_mask)
