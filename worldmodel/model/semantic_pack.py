"""SemanticPack: the learned long-term state ψ of the MemoryPack baseline (seed 2, section 3.1).

MemoryPack = FramePack (short-term: recent frames, here the `window` strategy's sinks + last W
frames of KV cache) + SemanticPack (long-term: ψ, a few tokens updated once per block):

    ψ_0     = Init(prompt)                         learned queries attend to the prompt tokens
    m_n     = Memorize(x^n)                        self-attention inside block n's clean latents,
                                                   pooled to M tokens by learned queries
    ψ_{n+1} = Squeeze(ψ_n, m_n)                    cross-attention, m_n the query, ψ_n key/value

The generator reads ψ through its own cross-attention, with context [prompt ; ψ_n]; ψ has the
prompt's width (the model's text_dim), so no new projection in the generator is needed. Each
update costs O(one block), so a session of any length costs O(blocks) and ψ is a constant
M x text_dim numbers. A final LayerNorm keeps ψ bounded over unbounded sessions.

Shapes: latents [B, Bf, C, h, w] (one block); prompt [B, Lc, text_dim]; ψ and m [B, M, text_dim],
M = memory.pack_tokens. All float.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from worldmodel.config import MemoryConfig, ModelConfig
from worldmodel.model.attention import CrossAttention
from worldmodel.model.layers import FeedForward, init_linear


class _Layer(nn.Module):
    """Pre-norm attention + feed-forward. Self-attention when `context` is None."""

    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=eps)
        self.norm_kv = nn.LayerNorm(dim, eps=eps)
        self.attn = CrossAttention(dim, heads, eps)
        self.norm_f = nn.LayerNorm(dim, eps=eps)
        self.ffn = FeedForward(dim, 4 * dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, dim], context [B, Lc, dim] or None -> [B, L, dim]."""
        kv = self.norm_kv(x if context is None else context)
        x = x + self.attn(self.norm_q(x), kv)
        return x + self.ffn(self.norm_f(x))


class SemanticPack(nn.Module):
    def __init__(self, model: ModelConfig, memory: MemoryConfig):
        super().__init__()
        d = model.text_dim
        if not model.cross_attention:
            raise ValueError("the generator reads ψ through cross-attention, but model.cross_attention is off")
        if d % memory.pack_heads:
            raise ValueError(f"text_dim {d} is not divisible by memory.pack_heads {memory.pack_heads}")
        self.model_cfg, self.memory_cfg = model, memory
        self.tokens = memory.pack_tokens
        window_tokens = model.block_frames * model.tokens_per_frame
        # Memorize: the block's latents as patch tokens (the DiT's patching), plus where each sits.
        self.patch_embedding = nn.Conv3d(model.latent_channels, d, kernel_size=model.patch, stride=model.patch)
        self.position = nn.Parameter(torch.randn(window_tokens, d) * 0.02)
        self.layers = nn.ModuleList(_Layer(d, memory.pack_heads, model.eps) for _ in range(memory.pack_layers))
        self.pool_queries = nn.Parameter(torch.randn(self.tokens, d) * 0.02)
        self.pool = _Layer(d, memory.pack_heads, model.eps)
        # Init: ψ_0 from the prompt; Squeeze: m queries ψ_n.
        self.init_queries = nn.Parameter(torch.randn(self.tokens, d) * 0.02)
        self.init_layer = _Layer(d, memory.pack_heads, model.eps)
        self.squeeze_layer = _Layer(d, memory.pack_heads, model.eps)
        self.out_norm = nn.LayerNorm(d, eps=model.eps)
        init_linear(self)

    def initial_state(self, prompt: torch.Tensor) -> torch.Tensor:
        """ψ_0: prompt [B, Lc, text_dim] -> [B, M, text_dim]."""
        q = self.init_queries[None].expand(prompt.shape[0], -1, -1).to(prompt.dtype)
        return self.out_norm(self.init_layer(q, prompt))

    def memorize(self, latents: torch.Tensor) -> torch.Tensor:
        """m: the clean latents of one block [B, Bf, C, h, w] -> [B, M, text_dim]."""
        b, bf = latents.shape[:2]
        if bf != self.model_cfg.block_frames:
            raise ValueError(f"Memorize takes one block of {self.model_cfg.block_frames} frames, got {bf}")
        tokens = self.patch_embedding(latents.transpose(1, 2)).flatten(2).transpose(1, 2)  # [B, Bf*N, d]
        tokens = tokens + self.position.to(tokens.dtype)
        for layer in self.layers:
            tokens = layer(tokens)
        q = self.pool_queries[None].expand(b, -1, -1).to(tokens.dtype)
        return self.pool(q, tokens)

    def squeeze(self, state: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """ψ_{n+1} = Squeeze(ψ_n, m_n): state, m [B, M, text_dim] -> [B, M, text_dim]."""
        return self.out_norm(self.squeeze_layer(m, state.to(m.dtype)))

    def update(self, state: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """One block: ψ [B, M, text_dim], clean latents [B, Bf, C, h, w] -> the next ψ."""
        return self.squeeze(state, self.memorize(latents))

    def states(self, prompt: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
        """ψ_0 .. ψ_{K-1} for the K blocks of a clean clip: ψ_j has seen blocks < j.

        prompt [B, Lc, text_dim]; clip [B, K*Bf, C, h, w] -> [B, K, M, text_dim]. Memorize runs on
        all blocks at once; only the Squeeze chain is sequential (gradient flows through it).
        """
        b, f = clip.shape[:2]
        bf = self.model_cfg.block_frames
        if f % bf:
            raise ValueError(f"a clip of {f} frames is not a whole number of blocks of {bf}")
        k = f // bf
        state = self.initial_state(prompt)
        out = [state]
        if k > 1:
            m = self.memorize(clip[:, : (k - 1) * bf].reshape(b * (k - 1), bf, *clip.shape[2:]))
            m = m.unflatten(0, (b, k - 1))
            for j in range(k - 1):
                state = self.squeeze(state, m[:, j])
                out.append(state)
        return torch.stack(out, 1)
