"""The causal DiT: block-causal attention, KV-cached inference, RoPE."""

import pytest
import torch

from helpers import clip_inputs, tiny_model
from worldmodel.memory import KVMemory, make_strategy
from worldmodel.model import MemoryView
from worldmodel.model.masks import block_causal
from worldmodel.model.rope import apply_rope, rope_angles


def test_later_block_never_changes_earlier_output(tiny):
    model = tiny_model(tiny)
    x, t, a = clip_inputs(tiny, frames=9)
    mask = block_causal(9, 3)
    pos = torch.arange(9)
    base = model(x, t, a, pos, frame_mask=mask)
    x2, t2, a2 = x.clone(), t.clone(), a.clone()
    x2[:, 6:] += torch.randn_like(x2[:, 6:])
    t2[:, 6:] = 500.0
    a2[:, 6:] = 0.0
    moved = model(x2, t2, a2, pos, frame_mask=mask)
    torch.testing.assert_close(moved[:, :6], base[:, :6], rtol=0, atol=1e-6)
    assert (moved[:, 6:] - base[:, 6:]).abs().max() > 1e-3, "the changed block itself must change"


def test_frames_inside_a_block_see_each_other(tiny):
    model = tiny_model(tiny)
    x, t, a = clip_inputs(tiny, frames=3)
    base = model(x, t, a, torch.arange(3), frame_mask=block_causal(3, 3))
    x2 = x.clone()
    x2[:, 2] += 1.0
    moved = model(x2, t, a, torch.arange(3), frame_mask=block_causal(3, 3))
    assert (moved[:, 0] - base[:, 0]).abs().max() > 1e-4


def test_block_by_block_with_full_memory_equals_masked_clip_forward(tiny):
    model = tiny_model(tiny)
    frames, bf = 12, tiny.model.block_frames
    x, t, a = clip_inputs(tiny, frames=frames)
    scene = torch.tensor([0, 2])
    prompt = model.prompt_for_scenes(scene, 2)
    full = model(x, t, a, torch.arange(frames), prompt, frame_mask=block_causal(frames, bf))

    tiny.memory.strategy = "full"
    strategy = make_strategy(tiny.memory, bf)
    memory = KVMemory(tiny.model, capacity=frames, batch=2)
    for j in range(frames // bf):
        s = slice(j * bf, (j + 1) * bf)
        pos = torch.arange(s.start, s.stop)
        out, kvs = model(x[:, s], t[:, s], a[:, s], pos, prompt, memory=memory.view(), return_kv=True)
        torch.testing.assert_close(out, full[:, s], rtol=1e-5, atol=1e-5)
        strategy.write_block(memory, kvs, pos)
    assert memory.num_used == frames


def test_rope_shift_of_queries_and_keys_leaves_scores_unchanged(tiny):
    g = torch.Generator().manual_seed(0)
    d = tiny.model.head_dim
    grid = tiny.model.grid
    q = torch.randn(1, 3 * grid[0] * grid[1], 2, d, generator=g)
    k = torch.randn_like(q)

    def scores(start):
        cos, sin = rope_angles(torch.arange(start, start + 3), grid, d)
        return torch.einsum("blhd,bmhd->bhlm", apply_rope(q, cos, sin), apply_rope(k, cos, sin))

    torch.testing.assert_close(scores(0), scores(1234), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(scores(0), torch.einsum("blhd,bmhd->bhlm", q, k), atol=1e-3)


def test_clip_start_offset_does_not_change_the_output(tiny):
    model = tiny_model(tiny)
    x, t, a = clip_inputs(tiny, frames=6)
    mask = block_causal(6, 3)
    out0 = model(x, t, a, torch.arange(6), frame_mask=mask)
    out1 = model(x, t, a, torch.arange(300, 306), frame_mask=mask)
    torch.testing.assert_close(out0, out1, rtol=1e-4, atol=1e-4)


def test_null_prompt_stands_for_the_empty_condition(tiny):
    model = tiny_model(tiny)
    x, t, a = clip_inputs(tiny, frames=3)
    null = model.prompt_for_scenes(torch.tensor([-1, -1]), 2)
    torch.testing.assert_close(null, model.prompt_for_scenes(None, 2))
    scene = model.prompt_for_scenes(torch.tensor([1, 3]), 2)
    out_null = model(x, t, a, torch.arange(3), null)
    out_scene = model(x, t, a, torch.arange(3), scene)
    assert (out_null - out_scene).abs().max() > 1e-4


def test_a_full_memory_attends_without_a_mask_and_gives_the_same_output(tiny):
    """KVMemory tells the model, from its host-side slot table, when every attended slot holds
    data; attention then runs unmasked (the fused kernels) and must give what the mask gives."""
    from dataclasses import replace

    model = tiny_model(tiny)
    mem = KVMemory(tiny.model, capacity=6, batch=2)
    x, t, a = clip_inputs(tiny, frames=3)
    _, kvs = model(x, torch.zeros_like(t), a, torch.arange(3), return_kv=True)
    k = torch.stack([kv[0] for kv in kvs])
    v = torch.stack([kv[1] for kv in kvs])
    mem.write([0, 1, 2], k, v, [0, 1, 2])
    partial = mem.view()
    # 3 of 6 slots hold data: the view holds those 3 (no mask), and reads what the masked buffers give
    assert partial.slots == 3 and partial.all_valid
    x1, t1, a1 = clip_inputs(tiny, frames=3)
    whole = MemoryView(mem.k, mem.v, mem.valid)
    torch.testing.assert_close(model(x1, t1, a1, torch.arange(3, 6), memory=partial),
                               model(x1, t1, a1, torch.arange(3, 6), memory=whole), rtol=1e-5, atol=1e-5)
    mem.write([3, 4, 5], k, v, [3, 4, 5])
    full = mem.view()
    assert full.all_valid and mem.view([5, 1]).all_valid
    x2, t2, a2 = clip_inputs(tiny, frames=3)
    pos = torch.arange(6, 9)
    fast = model(x2, t2, a2, pos, memory=full)
    masked = model(x2, t2, a2, pos, memory=replace(full, all_valid=False))
    torch.testing.assert_close(fast, masked, rtol=1e-5, atol=1e-5)


def test_a_training_forward_compiles_as_one_graph():
    """What torch.compile sees of a training stage's forward (train mode, [clean ; noisy] mask,
    scene ids) has no graph break: a break splits the compiled step and, being a value read back
    from the device, makes the host wait for the GPU (until session 12 the scene-id check did)."""
    import torch._dynamo as dynamo

    from worldmodel.config import preset
    from worldmodel.model import CausalDiT
    from worldmodel.model.masks import teacher_forcing

    cfg = preset("tiny").model
    model = CausalDiT(cfg).train()
    f = 2 * cfg.block_frames
    x = torch.randn(2, 2 * f, cfg.latent_channels, cfg.latent_height, cfg.latent_width)
    args = (x, torch.rand(2, 2 * f) * 1000, torch.zeros(2, 2 * f, cfg.action_dim), torch.arange(f).repeat(2))
    mask = teacher_forcing(f, cfg.block_frames, "cpu")
    dynamo.reset()
    explained = dynamo.explain(model)(*args, frame_mask=mask, scene=torch.tensor([0, -1]), validate=False)
    assert explained.graph_break_count == 0, explained.break_reasons
    # the check a direct caller asks for still refuses an unknown scene
    with pytest.raises(ValueError, match="scene id out of range"):
        model.prompt_for_scenes(torch.tensor([cfg.num_scenes, 0]), 2)
