"""Several sessions' next blocks in one batched pass.

The runtime batches the sessions whose `step` requests arrive together: for a small model the
cost of a block is mostly per-pass overhead, so n sessions in one pass cost about what one does.

Each session keeps its own `Rollout` — its own KV memory and slot table, frame positions and
noise stream. Only the forward passes are shared:
  - the attended memory views are padded to the same number of slots with invalid ones (attention
    gives them zero weight) and stacked: k/v [layers, n, S, N, heads, head_dim], valid [n, S];
  - each sample gets its own RoPE tables (its own absolute frame positions), prompt and noise;
  - the clean pass that writes memory runs once, and each session's strategy stores its slice.
A block comes out the same, up to float rounding, as when its session steps alone
(tests/test_rollout_batch.py).
"""

from __future__ import annotations

import torch

from worldmodel.diffusion.sampler import denoise_block, fresh_noise
from worldmodel.model import MemoryView
from worldmodel.rollout import Rollout


def batch_key(roll: Rollout):
    """Rollouts with equal keys can be stepped together; None: this one always steps alone
    (a batch of its own, the multi-step teacher sampler, a long-term state of its own, or action
    guidance, whose second pass `generate_together` does not make)."""
    if (roll.batch != 1 or roll.euler_sigmas is not None or getattr(roll, "semantic_pack", None) is not None
            or getattr(roll, "action_guidance", 1.0) != 1.0):
        return None
    return (id(roll.generator), id(roll.memory_model), roll.strategy.writer, tuple(roll.strategy.kept_frames()),
            tuple(roll.sigmas), roll.memory.k.dtype, str(roll.device))


def stack_views(views: list[MemoryView]) -> MemoryView:
    """Views of batch 1 with S_i slots -> one view of batch n with S = max S_i slots."""
    s = max(v.slots for v in views)
    ks, vs, valids = [], [], []
    for view in views:
        pad = s - view.slots
        k, v, valid = view.k, view.v, view.valid.reshape(1, -1)
        if pad:
            shape = (*k.shape[:2], pad, *k.shape[3:])
            k = torch.cat([k, k.new_zeros(shape)], 2)
            v = torch.cat([v, v.new_zeros(shape)], 2)
            valid = torch.cat([valid, valid.new_zeros(1, pad)], 1)
        ks.append(k)
        vs.append(v)
        valids.append(valid)
    all_valid = all(v.all_valid and v.slots == s for v in views)
    return MemoryView(torch.cat(ks, 1), torch.cat(vs, 1), torch.cat(valids, 0), all_valid=all_valid)


@torch.no_grad()
def generate_together(
    rolls: list[Rollout],
    actions: list[torch.Tensor],
    scenes: list[torch.Tensor | None],
    poses: list[torch.Tensor | None],
    generators: list[torch.Generator],
) -> torch.Tensor:
    """The next block of every rollout, as `rolls[i].generate(actions[i], scenes[i], poses[i],
    generator=generators[i])` would make it, in one batched pass.

    actions[i]: [1, Bf, A]; scenes[i]: [1] int64 or None; poses[i]: [1, Bf, pose_dim] or None.
    Returns clean latents [n, Bf, C, h, w] (row i is rollout i's). Inputs, the new keys/values and
    every rollout's write (its strategy's slot choice) are all checked before any memory is
    written, so a failure leaves every rollout as it was, apart from the noise streams (the
    caller restores those, as the runtime does). Each rollout's `retrieval` switch is honoured.
    """
    n = len(rolls)
    if not n or not len(actions) == len(scenes) == len(poses) == len(generators) == n:
        raise ValueError("generate_together needs one action block, scene, pose block and generator per rollout")
    keys = {batch_key(r) for r in rolls}
    if None in keys or len(keys) != 1:
        raise ValueError("these rollouts cannot be batched (different networks, strategies or samplers)")
    if len({id(r) for r in rolls}) != n:
        raise ValueError("a rollout appears twice in one batch")
    first = rolls[0]
    cfg, gen, device = first.cfg, first.generator, first.device
    checked = [r._check(a, p) for r, a, p in zip(rolls, actions, poses)]
    acts = torch.cat([a for a, _ in checked])
    pos = torch.stack([r._positions() for r in rolls])  # [n, Bf]
    view = stack_views([r._view(p) for r, (_, p) in zip(rolls, checked)])
    tables = [gen.rope_tables(p) for p in pos]
    rope = (torch.stack([c for c, _ in tables]), torch.stack([s for _, s in tables]))  # [n, Bf*N, D/2] each
    prompt = torch.cat([gen.prompt_for_scenes(s, 1) for s in scenes])
    shape = (n, cfg.block_frames, cfg.latent_channels, cfg.latent_height, cfg.latent_width)
    noise = fresh_noise(shape, generators, device)

    def velocity(x, s):
        return gen(x, s * 1000.0, acts, pos[0], prompt, memory=view, rope=rope, validate=False)

    x0 = denoise_block(velocity, noise, first.sigmas, generators)
    if first.strategy.kept_frames():
        writer = first.memory_model if first.strategy.writer == "memory_model" else gen
        t0 = torch.zeros(n, cfg.block_frames, device=device)
        kvs = writer(x0, t0, acts, pos[0], writer.prompt_for_scenes(None, n), memory=view, rope=rope,
                     kv_only=True, validate=False)
        if not all(torch.isfinite(t).all() for kv in kvs for t in kv):
            raise ValueError("the memory write produced NaN or infinite values; no memory was changed")
        # Every session's write is planned (slots chosen, checked) before any is made: one
        # session that cannot write must not leave the others half-written.
        plans = [r.strategy.plan_block(r.memory, [(k[i:i + 1], v[i:i + 1]) for k, v in kvs], pos[i], p)
                 for i, (r, (_, p)) in enumerate(zip(rolls, checked))]
        for r, plan in zip(rolls, plans):
            if plan is not None:
                r.memory.commit(plan)
    for r in rolls:
        r.next_frame += cfg.block_frames
    return x0
