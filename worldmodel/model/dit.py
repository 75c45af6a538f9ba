"""CausalDiT: the frame-autoregressive diffusion transformer over latent frames.

The block computes what Wan2.1's attention block computes (LayerNorm without affine before
self-attention and FFN, RMS-normalised q/k, 3-D RoPE, affine LayerNorm before cross-attention,
GELU-tanh FFN, a 6-way modulation added to a learned per-block table), plus the action: a
per-frame action embedding added to the time embedding (so adaLN sees it) and, with
`ModelConfig.action_tokens`, a per-block projection of it added to every token of its frame
before self-attention — the direct path without which the model learns to ignore the keys.

Output meaning: always the flow-matching velocity v = noise - x0 (see diffusion/flow_matching.py
for conversions to x0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from worldmodel.actions import ACTION_HIGH, ACTION_LOW
from worldmodel.config import ModelConfig
from worldmodel.model.attention import CrossAttention, SelfAttention, attend
from worldmodel.model.layers import FeedForward, TimeActionEmbedding, init_linear, modulate
from worldmodel.model.masks import expand_to_tokens, flex_block_mask
from worldmodel.model.rope import rope_angles, rope_rotation, tracing

# MAGWORLD_DENSE_MASKS=1 uses dense SDPA masks on CUDA too (to compare with FlexAttention).
DENSE_MASKS = os.environ.get("MAGWORLD_DENSE_MASKS", "") == "1"


@dataclass
class MemoryView:
    """Keys/values the new frames may attend to, one entry per layer.

    k, v:  [layers, B, S, N, heads, head_dim] (keys already rotated to their absolute frames)
    valid: [S] or [B, S] bool — slot holds data. S may be 0.
    """

    k: torch.Tensor
    v: torch.Tensor
    valid: torch.Tensor
    # Known on the host that every slot holds data (KVMemory knows from its slot table, without
    # reading the device): attention then needs no mask and can take the fused kernels.
    all_valid: bool = False
    # layer -> (key, keys, values): the heads-first buffers of keys_values, made once per view
    _buffers: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def slots(self) -> int:
        return self.k.shape[2]

    def keys_values(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What layer `layer` attends to: heads-first keys and values [B, H, S*N + L, D], the
        memory's S*N tokens then the new k, v [B, H, L, D].

        Without autograd (inference) on the CPU the buffers are made once per view and layer, so the memory
        is copied once per block rather than once per denoising step and layer; each call only
        writes its own L tokens into their tail, and what it returns holds until the next call.
        A buffer is made anew when the view's k/v have been written to since (their version;
        inference-mode tensors have none, so they are concatenated every time, as with autograd)."""
        mk, mv = (t[layer].flatten(1, 2).transpose(1, 2) for t in (self.k, self.v))  # [B, H, S*N, D]
        # CPU only: on CUDA the cudagraph backend replays what it captured, and a capture that
        # found the buffer already made would leave the memory's copy out of the graph
        if (k.device.type != "cpu" or torch.is_grad_enabled() or tracing() or self.k.is_inference()
                or self.v.is_inference()):
            return torch.cat([mk.to(k.dtype), k], 2), torch.cat([mv.to(v.dtype), v], 2)
        key = (k.shape, k.dtype, v.dtype, self.k._version, self.v._version)
        held = self._buffers.get(layer)
        if held is None or held[0] != key:
            m = mk.shape[2]
            keys = k.new_empty((*k.shape[:2], m + k.shape[2], k.shape[3]))
            values = v.new_empty((*v.shape[:2], m + v.shape[2], v.shape[3]))
            keys[:, :, :m] = mk
            values[:, :, :m] = mv
            held = self._buffers[layer] = (key, keys, values)
        _, keys, values = held
        m = mk.shape[2]
        keys[:, :, m:] = k
        values[:, :, m:] = v
        return keys, values

    def attention_mask(self, own: torch.Tensor | None, length: int) -> torch.Tensor | None:
        """The mask of `length` new tokens over [memory ; new] tokens, [B or 1, 1, L, S*N + L]
        bool, from the valid slots and `own` ([L, L] over the new tokens, or None = all); None
        when nothing is masked (every slot valid, no `own`): SDPA then takes its fused kernels."""
        if self.all_valid and own is None:
            return None
        tokens = self.k.shape[3]
        if self.all_valid:
            valid = torch.ones(1, self.slots * tokens, dtype=torch.bool, device=self.valid.device)
        else:
            valid = self.valid.repeat_interleave(tokens, dim=-1)
            valid = valid if valid.dim() == 2 else valid[None]
        mem = valid[:, None, None, :].expand(valid.shape[0], 1, length, valid.shape[1])
        if own is None:
            own = torch.ones(length, length, dtype=torch.bool, device=valid.device)
        return torch.cat([mem, own.view(1, 1, length, length).expand(mem.shape[0], 1, length, length)], dim=-1)


class DiTBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(d, cfg.heads, cfg.eps)
        self.norm3 = nn.LayerNorm(d, eps=cfg.eps, elementwise_affine=True) if cfg.cross_attention else None
        self.cross_attn = CrossAttention(d, cfg.heads, cfg.eps) if cfg.cross_attention else None
        self.norm2 = nn.LayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.ffn = FeedForward(d, cfg.ffn_dim)
        self.modulation = nn.Parameter(torch.zeros(1, 1, 6, d))
        self.action_in = nn.Linear(d, d) if cfg.action_tokens else None

    # The model's compiled token paths (worldmodel.model.fused.TokenPaths, set by
    # compile_token_paths on every block), called as f(block, ...); None = these methods.
    token_paths = None

    def forward(self, x, mod, a, rot, context, mask, memory, layer, kv_only: bool = False):
        """x [B, F, N, d] tokens by frame; mod: this layer's six [B, F, 1, d] modulations (shift,
        1 + scale, gate of attention, then of the FFN; CausalDiT.modulations) that broadcast over
        a frame's tokens, or the per-frame e6 [B, F, 6, d] they are made from with this layer's
        own table; a [B, F, d] action features; rot, mask, memory (a MemoryView or None)
        as SelfAttention takes them. Returns x and the layer's k, v [B, F*N, H, D]; with kv_only
        (None, k, v), and the layer stops there.

        Three parts: `attention_in` and `attention_out` work token by token (their shapes do not
        depend on the memory) and are what torch.compile fuses (worldmodel/model/fused.py); the
        attention between them reads the memory and stays on SDPA."""
        if mod.dim() == 4:  # e6 [B, F, 6, d]: this layer makes its own (under autograd; CausalDiT.forward)
            mod = (self.modulation + mod).unsqueeze(-2).unbind(2)
            mod = (mod[0], mod[1] + 1, mod[2], mod[3], mod[4] + 1, mod[5])
        paths = self.token_paths
        into, out = (DiTBlock.attention_in, DiTBlock.attention_out) if paths is None else paths[:2]
        x, q, k, v = into(self, x, mod, a, rot, kv_only)
        if kv_only:
            return None, k.transpose(1, 2), v.transpose(1, 2)
        keys, values = (k, v) if memory is None else memory.keys_values(layer, k, v)
        x = out(self, x, attend(q, keys, values, mask), mod, context)
        return x, k.transpose(1, 2), v.transpose(1, 2)

    def attention_in(self, x, mod, a, rot, kv_only: bool = False):
        """Before self-attention, token by token: the action added to the tokens, norm1 and the
        attention's modulation, the projections. Returns (x, q, k, v), q/k/v heads-first
        [B, H, F*N, D] (q, k normalised and rotated); q is None with kv_only."""
        b, f, n, d = x.shape
        if self.action_in is not None:
            x = x + self.action_in(a)[:, :, None]
        h = modulate(self.norm1(x), mod[0], mod[1]).view(b, f * n, d)
        if kv_only:
            return (x, None, *self.self_attn.kv(h, rot))
        return (x, *self.self_attn.qkv(h, rot))

    def attention_out(self, x, y, mod, context):
        """After self-attention (y [B, F*N, H*D], the heads' outputs), token by token: the output
        projection and its gated residual, cross-attention to the context, the modulated FFN."""
        b, f, n, d = x.shape
        x = torch.addcmul(x, self.self_attn.o(y).view(b, f, n, d), mod[2])
        if self.cross_attn is not None:
            if context.dim() == 4:  # per-frame context [B, F, Lc, d]: each frame's tokens read their own
                y = self.cross_attn(self.norm3(x).flatten(0, 1), context.flatten(0, 1))
            else:
                y = self.cross_attn(self.norm3(x).view(b, f * n, d), context)
            x = x + y.view(b, f, n, d)
        return torch.addcmul(x, self.ffn(modulate(self.norm2(x), mod[3], mod[4])), mod[5])


class CausalDiT(nn.Module):
    # worldmodel.model.fused.TokenPaths once compile_token_paths has compiled this model's token
    # paths (the blocks' `attention_in`/`attention_out` and `output`); None = eager.
    token_paths = None

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.latent_channels, d, kernel_size=cfg.patch, stride=cfg.patch)
        self.time_action = TimeActionEmbedding(cfg.freq_dim, d, cfg.action_dim)
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        if cfg.cross_attention:
            self.text_embedding = nn.Sequential(
                nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d)
            )
            self.null_prompt = nn.Parameter(torch.randn(cfg.text_tokens, cfg.text_dim) * 0.02)
            self.scene_prompts = (
                nn.Parameter(torch.randn(cfg.num_scenes, cfg.text_tokens, cfg.text_dim) * 0.02)
                if cfg.num_scenes > 0
                else None
            )
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.layers))
        self.head_norm = nn.LayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(d, cfg.patch[1] * cfg.patch[2] * cfg.latent_channels)
        self.head_modulation = nn.Parameter(torch.zeros(1, 1, 2, d))
        # Actions arrive in their physical units (worldmodel.actions) and are scaled to [-1, 1] here.
        self.register_buffer("action_center", torch.as_tensor((ACTION_HIGH + ACTION_LOW) / 2), persistent=False)
        self.register_buffer("action_scale", torch.as_tensor((ACTION_HIGH - ACTION_LOW) / 2), persistent=False)
        # Added to the six modulations (shift, scale, gate; attention then FFN): 1 + scale, once.
        self.register_buffer("scale_one", torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])[:, None], persistent=False)
        self._init_weights()

    def _init_weights(self):
        init_linear(self)
        if self.cfg.action_zero_init:
            for layer in [self.time_action.action_mlp[2]] + [b.action_in for b in self.blocks if b.action_in is not None]:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        # adaLN-zero: every residual branch and the output start closed.
        nn.init.zeros_(self.time_projection[1].weight)
        nn.init.zeros_(self.time_projection[1].bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def rope_tables(self, frame_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin) [F*N, head_dim/2] for frames at `frame_pos` [F]."""
        return rope_angles(frame_pos, self.cfg.grid, self.cfg.head_dim, self.cfg.rope_theta)

    # ----------------------------------------------------------------------------------------
    # conditions

    def prompt_for_scenes(self, scene: torch.Tensor | None, batch: int, check: bool = True) -> torch.Tensor:
        """Scene ids [B] (int64; -1 = empty condition) -> prompt [B, text_tokens, text_dim].
        None means the empty condition for the whole batch. check: refuse ids past the table
        (reads the ids on the host: a synchronisation on CUDA; forward checks them only when it
        checks its inputs' values)."""
        null = self.null_prompt[None].expand(batch, -1, -1)
        if scene is None or self.scene_prompts is None:
            return null
        scene = scene.to(self.null_prompt.device).long()
        if scene.shape != (batch,):
            raise ValueError(f"scene ids must have shape [{batch}], got {list(scene.shape)}")
        if check and (scene >= self.cfg.num_scenes).any():
            raise ValueError(f"scene id out of range: max is {self.cfg.num_scenes - 1}, got {int(scene.max())}")
        table = self.scene_prompts[scene.clamp(min=0)]
        return torch.where((scene < 0)[:, None, None], null, table)

    # ----------------------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        actions: torch.Tensor,
        frame_pos: torch.Tensor,
        prompt: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        memory: MemoryView | None = None,
        return_kv: bool = False,
        scene: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        validate: bool = True,
        kv_only: bool = False,
    ):
        """Predict the flow velocity of F latent frames.

        x:          [B, F, C, h, w] noisy latents (float)
        t:          [B, F] flow time of each frame on the 0..1000 scale (0 = clean)
        actions:    [B, F, A] actions in their units (see worldmodel.actions)
        frame_pos:  [F] absolute frame index of each frame (RoPE time position)
        prompt:     [B, Lc, text_dim] cross-attention context (the scene prompt has Lc = text_tokens;
                    `memorypack` appends its state ψ), or [B, F, Lc, text_dim] for one context
                    per frame, or None for the empty condition
        frame_mask: [F, F] bool, which frames may attend to which; None = all (one block)
        memory:     past keys/values to attend to (inference), or None
        scene:      [B] int64 scene ids (-1 = empty), used when `prompt` is None
        rope:       (cos, sin) from `rope_tables(frame_pos)`, to reuse across the steps of a block
        validate:   check shapes and values (callers that validated their inputs pass False:
                    the value checks synchronise with the device on every call)
        kv_only:    return only the list of (k, v) of return_kv, not the velocity: the last
                    layer stops at its keys/values and the head is skipped (all a memory write needs)
        Returns v [B, F, C, h, w]; with return_kv also a list over layers of (k, v), each
        [B, F, N, heads, head_dim] (k post-RoPE) — what a memory write stores.
        """
        cfg = self.cfg
        if validate:
            self._check_inputs(x, t, actions, frame_pos, prompt, frame_mask)
        b, f = x.shape[:2]
        gh, gw = cfg.grid
        n = gh * gw

        tokens = self.patch_embedding(x.transpose(1, 2)).flatten(3).permute(0, 2, 3, 1).contiguous()  # [B, F, N, d]
        e, a = self.time_action(t, (actions - self.action_center) / self.action_scale)  # [B, F, d] each
        e6 = self.time_projection(e).unflatten(-1, (6, cfg.dim))  # [B, F, 6, d]
        # Inference makes every layer's modulations in one op. Under autograd, or with the blocks
        # sharded by FSDP (DTensor parameters, gathered only inside each block's forward), each
        # block makes its own.
        sharded = hasattr(self.blocks[0].modulation, "placements")
        mods = None if torch.is_grad_enabled() or sharded else self.modulations(e6)
        cos, sin = rope if rope is not None else self.rope_tables(frame_pos)
        # the compiled token paths take (cos, sin): inductor does not fuse complex numbers
        rot = rope_rotation(cos, sin) if self.token_paths is None else (cos, sin)
        context = None
        if cfg.cross_attention:
            if prompt is None:
                # inside forward, so that DDP sees the prompt tables used
                prompt = self.prompt_for_scenes(scene, b, check=validate and self._value_checks())
            context = self.text_embedding(prompt.to(tokens.dtype))

        mask = None
        if frame_mask is not None:
            if x.is_cuda and memory is None and not DENSE_MASKS:
                mask = flex_block_mask(frame_mask.to(x.device), n)
            else:
                mask = expand_to_tokens(frame_mask.to(x.device), n)
        if memory is not None and memory.slots == 0:
            memory = None
        if memory is not None:
            mask = memory.attention_mask(mask, f * n)

        kvs = []
        for i, block in enumerate(self.blocks):
            tokens, k, v = block(tokens, e6 if mods is None else mods[i], a, rot, context, mask, memory, i,
                                 kv_only=kv_only and i == len(self.blocks) - 1)
            if return_kv or kv_only:
                kvs.append((k.unflatten(1, (f, n)), v.unflatten(1, (f, n))))
        if kv_only:
            return kvs

        v_pred = (CausalDiT.output if self.token_paths is None else self.token_paths.output)(self, tokens, e)
        return (v_pred, kvs) if return_kv else v_pred

    def output(self, tokens: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """The head, token by token: tokens [B, F, N, d] and the time features e [B, F, d] -> the
        velocity [B, F, C, h, w]."""
        shift, scale = (self.head_modulation + e[:, :, None, :]).unbind(2)
        out = self.head(modulate(self.head_norm(tokens), shift[:, :, None], 1 + scale[:, :, None]))  # [B, F, N, ph*pw*C]
        return self._unpatchify(out, *tokens.shape[:2])

    def modulations(self, e6: torch.Tensor) -> torch.Tensor:
        """Every layer's adaLN modulations at once from the per-frame e6 [B, F, 6, d]:
        [layers, 6, B, F, 1, d] — for layer i, mods[i] unpacks to (shift, 1 + scale, gate) of
        attention, then of the FFN, each broadcasting over a frame's tokens."""
        table = torch.stack([block.modulation[0, 0] for block in self.blocks])  # [layers, 6, d]
        mods = table[:, None, None] + e6 + self.scale_one  # [layers, B, F, 6, d]
        return mods.permute(0, 3, 1, 2, 4).unsqueeze(-2)

    def _unpatchify(self, out: torch.Tensor, b: int, f: int) -> torch.Tensor:
        cfg = self.cfg
        gh, gw = cfg.grid
        ph, pw = cfg.patch[1:]
        c = cfg.latent_channels
        out = out.view(b, f, gh, gw, ph, pw, c)
        return out.permute(0, 1, 6, 2, 4, 3, 5).reshape(b, f, c, gh * ph, gw * pw)

    def _value_checks(self) -> bool:
        """Whether forward checks its inputs' values (each check synchronises with the device):
        not in training (which feeds its own tensors), tracing or compiling."""
        return not self.training and not torch.jit.is_tracing() and not torch.compiler.is_compiling()

    def _check_inputs(self, x, t, actions, frame_pos, prompt, frame_mask):
        cfg = self.cfg
        want = (cfg.latent_channels, cfg.latent_height, cfg.latent_width)
        if x.dim() != 5 or tuple(x.shape[2:]) != want:
            raise ValueError(
                f"latents must have shape [batch, frames, {want[0]}, {want[1]}, {want[2]}], got {list(x.shape)}"
            )
        b, f = x.shape[:2]
        if t.shape != (b, f):
            raise ValueError(f"t must have shape [{b}, {f}] (one flow time per frame), got {list(t.shape)}")
        if actions.shape != (b, f, cfg.action_dim):
            raise ValueError(
                f"actions must have shape [{b}, {f}, {cfg.action_dim}] (one row per frame), got {list(actions.shape)}"
            )
        if frame_pos.shape != (f,):
            raise ValueError(f"frame_pos must have shape [{f}], got {list(frame_pos.shape)}")
        if prompt is not None:
            per_frame = prompt.dim() == 4 and prompt.shape[1] == f
            if prompt.shape[0] != b or prompt.shape[-1] != cfg.text_dim or not (prompt.dim() == 3 or per_frame):
                raise ValueError(
                    f"prompt must have shape [{b}, tokens, {cfg.text_dim}] (e.g. tokens = {cfg.text_tokens}) or "
                    f"[{b}, {f}, tokens, {cfg.text_dim}] (one context per frame), got {list(prompt.shape)}"
                )
        if frame_mask is not None and frame_mask.shape != (f, f):
            raise ValueError(f"frame_mask must have shape [{f}, {f}], got {list(frame_mask.shape)}")
        # Value checks synchronise with the device; training (which feeds its own tensors) skips them.
        if self._value_checks():
            for name, val in (("latents", x), ("t", t), ("actions", actions)):
                if not torch.isfinite(val).all():
                    raise ValueError(f"{name} contain NaN or infinite values")
