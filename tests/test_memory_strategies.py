"""Memory strategies keep exactly the slots their policy says; eviction never corrupts."""

import numpy as np
import pytest
import torch

from helpers import tiny_model
from worldmodel.memory import KVMemory, KVMemoryError, make_strategy
from worldmodel.rollout import Rollout


def run_blocks(cfg, strategy, blocks, capacity=None, seed=0):
    cfg.memory.strategy = strategy
    torch.manual_seed(seed)
    roll = Rollout(tiny_model(cfg), cfg.sampler, cfg.memory, capacity=capacity)
    for i in range(blocks):
        poses = torch.zeros(1, 3, 5)
        poses[..., 3] = 10.0 * i  # turning: every block looks a new way
        roll.generate(torch.zeros(1, 3, 4), poses=poses)
    return roll


def held_frames(memory):
    return sorted(memory.frame[memory.frame >= 0].tolist())


def test_full_keeps_every_frame_until_capacity(tiny):
    roll = run_blocks(tiny, "full", blocks=4, capacity=24)
    assert held_frames(roll.memory) == list(range(12))


def test_full_at_capacity_keeps_sinks_and_the_newest(tiny):
    roll = run_blocks(tiny, "full", blocks=10, capacity=24)
    frames = held_frames(roll.memory)
    assert len(frames) == 24
    assert frames[:3] == [0, 1, 2], "sink frames are never evicted"
    assert frames[3:] == list(range(30 - 21, 30)), "then the newest frames"
    assert roll.memory.evictions == 30 - 24


def test_window_keeps_sinks_plus_last_w(tiny):
    tiny.memory.window_frames, tiny.memory.sink_frames = 6, 3
    roll = run_blocks(tiny, "window", blocks=7)
    assert held_frames(roll.memory) == [0, 1, 2] + list(range(15, 21))


def test_mag_keeps_one_frame_per_block_a_third_of_full(tiny):
    full = run_blocks(tiny, "full", blocks=5)
    mag = run_blocks(tiny, "mag", blocks=5)
    assert held_frames(mag.memory) == [2, 5, 8, 11, 14], "the last frame of every block"
    assert mag.memory.bytes_held() * 3 == full.memory.bytes_held()


def test_none_keeps_nothing(tiny):
    roll = run_blocks(tiny, "none", blocks=3)
    assert roll.memory.num_used == 0 and roll.next_frame == 9


def test_mag_at_capacity_evicts_a_redundant_view_not_the_newest(tiny):
    tiny.memory.strategy = "mag"
    tiny.memory.attention_budget = 4
    roll = Rollout(tiny_model(tiny), tiny.sampler, tiny.memory, capacity=5)
    # blocks 0..4 look at yaw 0, 90, 180, 270, 0 again: slot of block 0 and 4 are the same view
    for yaw in (0, 90, 180, 270, 0.5, 90.5):
        p = torch.zeros(1, 3, 5)
        p[..., 3] = yaw
        roll.generate(torch.zeros(1, 3, 4), poses=p)
    frames = held_frames(roll.memory)
    assert len(frames) == 5
    assert 17 in frames and 14 in frames, "the newest slots stay"
    assert 2 not in frames, "the oldest of two slots with the same view was evicted"


def test_mag_attends_to_recent_plus_overlapping_slots(tiny):
    tiny.memory.strategy = "mag"
    tiny.memory.attention_budget = 4
    strategy = make_strategy(tiny.memory, 3)
    memory = KVMemory(tiny.model, capacity=10)
    k = torch.zeros(tiny.model.layers, 1, 1, tiny.model.tokens_per_frame, tiny.model.heads, tiny.model.head_dim)
    for i, yaw in enumerate([0, 45, 90, 135, 180, 225, 270, 315]):
        memory.write([i], k, k, [i * 3 + 2], np.array([[[0, 0, 0, yaw, 0]]], np.float32))
    chosen = strategy.attend_slots(memory, pose=np.array([0, 0, 0, 44, 0], np.float32))
    assert len(chosen) == 4
    assert set(chosen[-2:].tolist()) == {6, 7}, "the two newest slots"
    assert set(chosen[:2].tolist()) == {0, 1}, "the two slots that look the way the camera looks now"


def test_bad_write_leaves_memory_unchanged(tiny):
    memory = KVMemory(tiny.model, capacity=6)
    shape = (tiny.model.layers, 1, 2, tiny.model.tokens_per_frame, tiny.model.heads, tiny.model.head_dim)
    good = torch.randn(shape)
    memory.write([0, 1], good, good, [0, 1])
    before = memory.k.clone(), memory.frame.copy()
    bad = good.clone()
    bad[-1, 0, 1, 0, 0, 0] = float("nan")
    with pytest.raises(KVMemoryError, match="NaN"):
        memory.write([1, 2], bad, good, [2, 3])
    with pytest.raises(KVMemoryError, match="shape"):
        memory.write([2, 3], good[:, :, :1], good[:, :, :1], [2, 3])
    with pytest.raises(KVMemoryError, match="cannot write 7 frames"):
        big = torch.zeros(shape[:2] + (7,) + shape[3:])
        memory.write(list(range(7)), big, big, list(range(7)))
    assert torch.equal(memory.k, before[0]) and (memory.frame == before[1]).all()


def test_writes_and_views_of_consecutive_slots_match_scattered_ones(tiny):
    """Runs of consecutive slots are sliced (no index sent to the device), others gathered: both
    store and show the same K/V, and a view of a run follows later writes to the memory only
    where the memory's own view would."""
    m = tiny.model
    shape = (m.layers, 2, 3, m.tokens_per_frame, m.heads, m.head_dim)
    k, v = torch.randn(shape), torch.randn(shape)
    run, scattered = KVMemory(m, capacity=8, batch=2), KVMemory(m, capacity=8, batch=2)
    run.write([2, 3, 4], k, v, [10, 11, 12])
    scattered.write([6, 1, 4], k, v, [10, 11, 12])
    view_run, view_scattered = run.view([2, 3, 4]), scattered.view([6, 1, 4])
    assert torch.equal(view_run.k, view_scattered.k) and torch.equal(view_run.v, view_scattered.v)
    assert view_run.k.untyped_storage().data_ptr() == run.k.untyped_storage().data_ptr()
    assert torch.equal(run.view().k, run.k[:, :, 2:5]) and bool(run.valid[2:5].all()) and not bool(run.valid[0])
    assert run.view().all_valid and scattered.view().all_valid


def test_a_training_memory_skips_the_finiteness_check_a_served_one_keeps(tiny):
    m = tiny.model
    shape = (m.layers, 1, 1, m.tokens_per_frame, m.heads, m.head_dim)
    bad = torch.full(shape, float("nan"))
    with pytest.raises(KVMemoryError, match="NaN"):
        KVMemory(m, capacity=2).write([0], bad, bad, [0])
    trusted = KVMemory(m, capacity=2, check_values=False)  # worldmodel/train/self_forcing.py's
    trusted.write([0], bad, bad, [0])
    assert trusted.num_used == 1


def test_a_block_larger_than_the_cache_is_refused_cleanly(tiny):
    tiny.memory.strategy = "full"
    roll = Rollout(tiny_model(tiny), tiny.sampler, tiny.memory, capacity=2)
    with pytest.raises(KVMemoryError, match="needs at least 3 slots"):
        roll.generate(torch.zeros(1, 3, 4))
    assert roll.memory.num_used == 0


@pytest.mark.parametrize("strategy, reader", [("window", "generator"), ("full", "generator"), ("mag", "memory model")])
def test_a_slot_is_decoded_by_the_network_that_wrote_it(tiny, strategy, reader):
    from worldmodel.rollout import decode_slot_latents

    tiny.memory.strategy = strategy
    generator, memory_model = tiny_model(tiny, seed=0), tiny_model(tiny, seed=1)
    roll = Rollout(generator, tiny.sampler, tiny.memory, memory_model)
    for _ in range(2):
        roll.generate(torch.zeros(1, 3, 4), generator=torch.Generator().manual_seed(0))
    slot = int(roll.memory.used_slots()[-1])
    decoded = decode_slot_latents(roll, slot, torch.Generator().manual_seed(5))
    net = generator if reader == "generator" else memory_model
    roll.generator = roll.memory_model = net  # either way the same network reads: the reference
    assert torch.equal(decoded, decode_slot_latents(roll, slot, torch.Generator().manual_seed(5)))
