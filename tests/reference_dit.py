"""The CausalDiT forward pass written plainly, op by op as the model defines it, on a CausalDiT's
own weights: what the fast paths of worldmodel/model (batched modulations, complex RoPE,
heads-first attention, memory buffers reused across steps, the CPU GELU) must reproduce to float
rounding. Inputs as CausalDiT.forward takes them (no FlexAttention: dense masks only)."""

import torch
import torch.nn.functional as F

from worldmodel.model.masks import expand_to_tokens
from worldmodel.model.rope import apply_rope


def rms(norm, x):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.eps)).type_as(x) * norm.weight


def sdpa(q, k, v, mask=None):
    """[B, L, H, D] in and out."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


def heads(att, t):
    return t.view(t.shape[0], -1, att.heads, att.head_dim)


def self_attention(att, x, cos, sin, mask, mem_k, mem_v, mem_valid):
    q = apply_rope(heads(att, rms(att.norm_q, att.q(x))), cos, sin)
    k = apply_rope(heads(att, rms(att.norm_k, att.k(x))), cos, sin)
    v = heads(att, att.v(x))
    if mem_k is None:
        return att.o(sdpa(q, k, v, mask).flatten(2)), k, v
    length = x.shape[1]
    valid = mem_valid if mem_valid.dim() == 2 else mem_valid[None]
    mem_mask = valid[:, None, None, :].expand(valid.shape[0], 1, length, valid.shape[1])
    own = torch.ones(1, 1, length, length, dtype=torch.bool) if mask is None else mask.view(1, 1, length, length)
    full = torch.cat([mem_mask, own.expand(mem_mask.shape[0], 1, length, length)], dim=-1)
    out = sdpa(q, torch.cat([mem_k, k], 1), torch.cat([mem_v, v], 1), full)
    return att.o(out.flatten(2)), k, v


def cross_attention(att, x, context):
    q = heads(att, rms(att.norm_q, att.q(x)))
    k = heads(att, rms(att.norm_k, att.k(context)))
    return att.o(sdpa(q, k, heads(att, att.v(context))).flatten(2))


def block(blk, x, e6, a, cos, sin, context, mask, mem, frames):
    b, length, d = x.shape
    n = length // frames
    if blk.action_in is not None:
        x = x + blk.action_in(a).repeat_interleave(n, dim=1)
    shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = (
        m.repeat_interleave(n, dim=1) for m in (blk.modulation + e6).unbind(2))
    y, k, v = self_attention(blk.self_attn, F.layer_norm(x, (d,), eps=blk.norm1.eps) * (1 + scale_a) + shift_a,
                             cos, sin, mask, *mem)
    x = x + y * gate_a
    if blk.cross_attn is not None:
        h = blk.norm3(x)
        if context.dim() == 4:
            x = x + cross_attention(blk.cross_attn, h.reshape(b * frames, n, d), context.flatten(0, 1)).reshape(b, length, d)
        else:
            x = x + cross_attention(blk.cross_attn, h, context)
    h = F.layer_norm(x, (d,), eps=blk.norm2.eps) * (1 + scale_f) + shift_f
    x = x + blk.ffn.fc2(F.gelu(blk.ffn.fc1(h), approximate="tanh")) * gate_f
    return x, k, v


def forward(model, x, t, actions, frame_pos, prompt=None, frame_mask=None, memory=None, return_kv=False,
            scene=None, rope=None):
    cfg = model.cfg
    b, f = x.shape[:2]
    n = cfg.grid[0] * cfg.grid[1]
    tokens = model.patch_embedding(x.transpose(1, 2)).flatten(2).transpose(1, 2)
    e, a = model.time_action(t, (actions - model.action_center) / model.action_scale)
    e6 = model.time_projection(e).unflatten(-1, (6, cfg.dim))
    cos, sin = rope if rope is not None else model.rope_tables(frame_pos)
    context = None
    if cfg.cross_attention:
        context = model.text_embedding(model.prompt_for_scenes(scene, b) if prompt is None else prompt)
    mask = None if frame_mask is None else expand_to_tokens(frame_mask, n)
    kvs = []
    for i, blk in enumerate(model.blocks):
        mem = (None, None, None)
        if memory is not None and memory.slots > 0:
            valid = torch.ones(memory.slots, dtype=torch.bool) if memory.all_valid else memory.valid
            mem = (memory.k[i].flatten(1, 2), memory.v[i].flatten(1, 2), valid.repeat_interleave(n, dim=-1))
        tokens, k, v = block(blk, tokens, e6, a, cos, sin, context, mask, mem, f)
        kvs.append((k.view(b, f, n, cfg.heads, cfg.head_dim), v.view(b, f, n, cfg.heads, cfg.head_dim)))
    shift, scale = (model.head_modulation + e[:, :, None, :]).unbind(2)
    h = F.layer_norm(tokens, (cfg.dim,), eps=model.head_norm.eps)
    out = model.head(h * (1 + scale.repeat_interleave(n, dim=1)) + shift.repeat_interleave(n, dim=1))
    v_pred = model._unpatchify(out, b, f)
    return (v_pred, kvs) if return_kv else v_pred
