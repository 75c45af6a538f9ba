"""Sessions stepped together in one batched pass make the blocks they make alone."""

import numpy as np
import pytest
import torch

import export_helpers
from worldmodel.bundle import WorldModel
from worldmodel.config import preset
from worldmodel.rollout_batch import batch_key, generate_together


@pytest.fixture(scope="module")
def model():
    return WorldModel.random(preset("tiny"), seed=0)


def random_block(rng):
    """export_helpers.random_block as batch-1 tensors: actions [1, 3, A], poses [1, 3, P]."""
    actions, poses = export_helpers.random_block(rng)
    return torch.from_numpy(actions[None]), torch.from_numpy(poses[None])


def assert_same_memory(a, b):
    assert a.next_frame == b.next_frame
    np.testing.assert_array_equal(a.memory.frame, b.memory.frame)
    np.testing.assert_array_equal(a.memory.pose, b.memory.pose)
    used = a.memory.used_slots()
    torch.testing.assert_close(a.memory.k[:, :, used], b.memory.k[:, :, used], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.memory.v[:, :, used], b.memory.v[:, :, used], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strategy", ["mag", "window", "full", "none"])
def test_batched_sessions_equal_sessions_alone(model, strategy):
    """Three sessions at different points of their history (so different positions, memory
    fill and attended slots) step together for 10 blocks; each one is checked against a copy of
    itself stepping alone with the same noise seed."""
    rng = np.random.default_rng(0)
    alone = [model.rollout(strategy) for _ in range(3)]
    together = [model.rollout(strategy) for _ in range(3)]
    for i, (a, b) in enumerate(zip(alone, together)):  # sessions 1 and 2 start with some history
        for _ in range(4 * i):
            actions, poses = random_block(rng)
            m = model.config.model
            x = torch.randn(1, 3, m.latent_channels, m.latent_height, m.latent_width)
            a.observe(x, actions, poses)
            b.observe(x, actions, poses)
    assert len({batch_key(r) for r in together}) == 1
    g_alone = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    g_together = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    for block in range(10):
        blocks = [random_block(rng) for _ in range(3)]
        scenes = [None, torch.tensor([2]), torch.tensor([-1])]
        expect = torch.cat([r.generate(a, s, p, generator=g)
                            for r, (a, p), s, g in zip(alone, blocks, scenes, g_alone)])
        got = generate_together(together, [a for a, _ in blocks], scenes, [p for _, p in blocks], g_together)
        torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)
    for a, b in zip(alone, together):
        assert_same_memory(a, b)


def test_bad_input_in_one_session_changes_no_session(model):
    rng = np.random.default_rng(1)
    rolls = [model.rollout("mag") for _ in range(2)]
    blocks = [random_block(rng) for _ in range(2)]
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    generate_together(rolls, [a for a, _ in blocks], [None, None], [p for _, p in blocks], gens)
    before = [(r.next_frame, r.memory.frame.copy(), r.memory.k.clone()) for r in rolls]
    bad = blocks[1][0].clone()
    bad[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        generate_together(rolls, [blocks[0][0], bad], [None, None], [None, None], gens)
    for r, (nf, frames, k) in zip(rolls, before):
        assert r.next_frame == nf
        np.testing.assert_array_equal(r.memory.frame, frames)
        assert torch.equal(r.memory.k, k)


def test_what_cannot_be_batched_is_refused(model):
    a, b = model.rollout("mag"), model.rollout("window")
    assert batch_key(a) != batch_key(b)
    x = random_block(np.random.default_rng(2))
    with pytest.raises(ValueError, match="cannot be batched"):
        generate_together([a, b], [x[0], x[0]], [None, None], [None, None], [torch.Generator()] * 2)
    with pytest.raises(ValueError, match="twice"):
        generate_together([a, a], [x[0], x[0]], [None, None], [None, None], [torch.Generator()] * 2)
