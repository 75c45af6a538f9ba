"""The cudagraph backend's batched steps (runtime/backends/graph_batch.py) make what each session
makes alone: frames (to fp32 tolerance), memory, frame counter, noise stream.

On the CPU the runner calls the modules eagerly over the batch buffers the CUDA graphs are
captured over, so this checks the batching itself: rows, padding, groups by plan and by number
of attended slots, and that a failure leaves every session of a batch as it was.
"""

import json

import numpy as np
import pytest
import torch

from export_helpers import checkpoint, random_block
from runtime.backends import load_backend
from runtime.backends.graph_batch import GraphBatch, batch_sizes, batched_shape
from test_export_backend import assert_same_frames
from worldmodel.memory import KVMemoryError


@pytest.fixture(scope="module")
def backend():
    return load_backend("cudagraph", checkpoint("mag"), "cpu")


def assert_same_state(a, b, atol=1e-4):
    """Graph sessions a (alone) and b (batched) hold the same memory and counters."""
    assert a.memory_state() == b.memory_state() and a.next_frame == b.next_frame
    used = a.memory.used_slots()
    scale = max(float(a.memory.k[:, :, used].abs().max()), 1e-6) if len(used) else 1.0
    for name in ("k", "v"):
        torch.testing.assert_close(getattr(b.memory, name)[:, :, used], getattr(a.memory, name)[:, :, used],
                                   rtol=0, atol=atol * scale)


def twins(backend, seeds, **plan):
    """Two sessions per seed: one to step alone, one to step batched."""
    return ([backend.new_session(seed=s, **plan) for s in seeds], [backend.new_session(seed=s, **plan) for s in seeds])


def step_both(backend, alone, together, rng, scenes=None):
    """One block of every session: `alone` one by one, `together` through step_many; checks the
    frames and returns the pass sizes."""
    blocks = [random_block(rng) for _ in alone]
    scenes = scenes or [None] * len(alone)
    want = [s.step(a, p, sc) for s, (a, p), sc in zip(alone, blocks, scenes)]
    got = backend.step_many(together, [a for a, _ in blocks], [p for _, p in blocks], scenes)
    for w, g in zip(want, got):
        assert not isinstance(g, Exception), g
        assert g.shape == w.shape and g.dtype == np.uint8
        assert_same_frames(w, g)
    return backend.last_pass_sizes


@pytest.mark.parametrize("k", [2, 3, 5])  # 3 and 5 run padded, in batches of 4 and 8
def test_a_batch_makes_each_sessions_blocks_and_memory(backend, k):
    alone, together = twins(backend, range(10, 10 + k))
    rng = np.random.default_rng(k)
    for block in range(26 if k == 2 else 13):  # past the budget (12: retrieval, n = S) and, for 2, the capacity (24)
        sizes = step_both(backend, alone, together, rng, scenes=[[None, 2, -1][(block + i) % 3] for i in range(k)])
        assert sizes == [k] * k
    for a, b in zip(alone, together):
        assert_same_state(a, b)
    if k == 2:
        assert together[0].memory_state()["evictions"] > 0
    assert {2: 2, 3: 4, 5: 8}[k] in together[0].batches.batches  # the padded size ran


def test_sessions_at_different_numbers_of_slots_run_in_separate_groups(backend):
    """Four sessions, two of them one block ahead: two batches of two; a fifth, ahead of all, alone."""
    alone, together = twins(backend, range(5))
    rng = np.random.default_rng(1)
    for extra, indices in ((1, (2, 3)), (3, (4,))):
        for _ in range(extra):
            block = random_block(rng)
            for i in indices:
                alone[i].step(*block, None)
                together[i].step(*block, None)
    for _ in range(4):
        assert step_both(backend, alone, together, rng) == [2, 2, 2, 2, 1]
    for a, b in zip(alone, together):
        assert_same_state(a, b)


def test_sessions_of_different_plans_run_in_separate_groups(backend):
    """Two `window` sessions (another plan) beside two `mag` ones: two batches, never one."""
    mag_alone, mag_together = twins(backend, (1, 2))
    win_alone, win_together = twins(backend, (3, 4), strategy="window", capacity=20)
    assert mag_together[0].batches is not win_together[0].batches
    assert (mag_together[0].batches.steady, win_together[0].batches.steady) == (12, 9)  # budget; sinks + window
    rng = np.random.default_rng(2)
    alone, together = [mag_alone[0], win_alone[0], mag_alone[1], win_alone[1]], \
        [mag_together[0], win_together[0], mag_together[1], win_together[1]]
    for _ in range(8):
        assert step_both(backend, alone, together, rng) == [2, 2, 2, 2]
    for a, b in zip(alone, together):
        assert_same_state(a, b)
    assert together[1].begin_step(*random_block(rng)).held == 9  # the window's steady state, captured ahead


def test_a_group_larger_than_the_largest_batch_runs_in_chunks():
    small = load_backend("cudagraph", checkpoint("mag"), "cpu", max_batch=2)
    alone, together = twins(small, range(3))
    rng = np.random.default_rng(3)
    for _ in range(3):
        assert step_both(small, alone, together, rng) == [2, 2, 1]
    for a, b in zip(alone, together):
        assert_same_state(a, b)


def test_without_batching_every_session_steps_alone():
    single = load_backend("cudagraph", checkpoint("mag"), "cpu", max_batch=1)
    assert not single.batches_steps and not single.batches
    alone, together = twins(single, range(2))
    assert step_both(single, alone, together, np.random.default_rng(4)) == [1, 1]


@pytest.mark.parametrize("flags, sizes", [({"no_batching": True}, None), ({"max_sessions": 3}, (2, 3)),
                                          ({}, (2, 4, 8))])
def test_serve_batches_up_to_its_session_limit_and_not_with_no_batching(flags, sizes):
    import argparse

    from worldmodel.cli.serve import build_backend

    args = argparse.Namespace(backend="cudagraph", device="cpu", export_cache=None, random_weights=False, preset=None,
                              checkpoint=str(checkpoint("mag")), **{"no_batching": False, "max_sessions": None, **flags})
    backend, _, _ = build_backend(args)
    assert backend.batches_steps == (sizes is not None)
    assert [b.sizes for b in backend.batches.values()] == ([] if sizes is None else [sizes])


def test_a_rejected_input_is_its_sessions_error_and_the_others_still_batch(backend):
    alone, together = twins(backend, range(4))
    rng = np.random.default_rng(5)
    step_both(backend, alone, together, rng)
    before = [(s.memory_state(), s.next_frame, s.generator.get_state()) for s in together]
    blocks = [random_block(rng) for _ in range(4)]
    bad = blocks[1][0].copy()
    bad[0, 0] = np.nan
    got = backend.step_many(together, [blocks[0][0], bad, blocks[2][0], blocks[3][0]], [p for _, p in blocks],
                            [None, None, 9, None])  # the tiny model has 4 scenes
    assert isinstance(got[1], ValueError) and "NaN" in str(got[1])
    assert isinstance(got[2], ValueError) and "scene id out of range" in str(got[2])
    assert backend.last_pass_sizes == [2, 1, 1, 2]
    for i in (0, 3):
        assert_same_frames(alone[i].step(*blocks[i], None), got[i])
    for i in (1, 2):
        state, frame, rng_state = before[i]
        assert together[i].memory_state() == state and together[i].next_frame == frame
        assert torch.equal(together[i].generator.get_state(), rng_state)
    # 1 and 2 are a block behind 0 and 3 now, on both sides: two groups, nothing of the failure left
    assert step_both(backend, alone, together, rng) == [2, 2, 2, 2]
    for a, b in zip(alone, together):
        assert_same_state(a, b)


def test_a_failed_write_in_a_batch_leaves_every_session_as_it_was_and_the_others_step_alone(backend, monkeypatch):
    """Session 1's memory write fails inside the batched pass after session 0's was planned: the
    batch changes nobody, 0 and 2 then step alone and make their blocks, 1 gets the error."""
    alone, together = twins(backend, range(3))
    rng = np.random.default_rng(6)
    step_both(backend, alone, together, rng)
    before = together[1].memory_state(), together[1].next_frame, together[1].generator.get_state()

    def no_room(memory, frames):
        raise KVMemoryError("no room")

    monkeypatch.setattr(together[1].strategy, "choose_slots", no_room)
    blocks = [random_block(rng) for _ in range(3)]
    got = backend.step_many(together, [a for a, _ in blocks], [p for _, p in blocks], [None] * 3)
    assert isinstance(got[1], KVMemoryError) and backend.last_pass_sizes == [1, 1, 1]
    for i in (0, 2):
        assert_same_frames(alone[i].step(*blocks[i], None), got[i])
    assert (together[1].memory_state(), together[1].next_frame) == before[:2]
    assert torch.equal(together[1].generator.get_state(), before[2])
    monkeypatch.undo()
    assert_same_frames(alone[1].step(*blocks[1], None), together[1].step(*blocks[1], None))
    assert step_both(backend, alone, together, rng) == [3, 3, 3]
    for a, b in zip(alone, together):
        assert_same_state(a, b)


def test_a_failed_batched_pass_changes_nobody_and_each_session_steps_alone(backend, monkeypatch):
    alone, together = twins(backend, range(2))
    rng = np.random.default_rng(7)
    step_both(backend, alone, together, rng)

    def broken(self, sessions, steps):
        for s in sessions:  # draw from every noise stream first, as the real pass does
            torch.randn(4, generator=s.generator)
        raise RuntimeError("the device fell over")

    monkeypatch.setattr(GraphBatch, "run", broken)
    assert step_both(backend, alone, together, rng) == [1, 1]  # the same frames: noise streams restored
    monkeypatch.undo()
    assert step_both(backend, alone, together, rng) == [2, 2]
    for a, b in zip(alone, together):
        assert_same_state(a, b)


def test_a_graph_that_cannot_be_bound_is_not_tried_again_and_its_groups_step_alone(monkeypatch):
    fresh = load_backend("cudagraph", checkpoint("mag"), "cpu")
    alone, together = twins(fresh, range(2))
    runner = together[0].runner
    bind, calls = runner.bind, []

    def failing(graph, tensors, pool=None):
        if any(t.shape[0] == 2 for t in tensors.values() if t.dim() == 5):  # a batch of 2's buffers
            calls.append(graph)
            raise RuntimeError("out of memory during capture")
        return bind(graph, tensors, pool=pool)

    monkeypatch.setattr(runner, "bind", failing)
    rng = np.random.default_rng(11)
    for _ in range(3):  # from an empty memory each time: the same graph (n = 0) every block
        for s in alone + together:
            s.reset()
        assert step_both(fresh, alone, together, rng) == [1, 1]
    assert calls == ["generator_step"]


def test_batch_shapes_and_sizes():
    assert batch_sizes(8) == (2, 4, 8) and batch_sizes(6) == (2, 4, 6) and batch_sizes(1) == ()
    assert batched_shape("x_t", [1, 3, 4, 3, 4], 4) == [4, 3, 4, 3, 4]
    assert batched_shape("memory_k", [2, 1, 12, 6, 2, 16], 4) == [2, 4, 12, 6, 2, 16]
    assert batched_shape("frame_pos", [3], 4) == [4, 3]
    assert batched_shape("latents", [3, 4, 3, 4], 4) == [12, 4, 3, 4]
    assert batched_shape("sigma", [1], 4) == [1]
    from worldmodel.config import MemoryConfig
    from worldmodel.memory import make_strategy

    steady = {name: make_strategy(MemoryConfig(name, 24, 6, 3, 12), 3).steady_slots(24)
              for name in ("mag", "window", "full", "none")}
    assert steady == {"mag": 12, "window": 9, "full": 24, "none": 0}


# ---------------------------------------------------------------- through the server


def test_the_server_batches_cudagraph_steps_and_a_failed_write_is_one_clients_error(backend, monkeypatch):
    """Three clients step together through the server: each gets the frames it gets alone and the
    reply says batch 3; then one client's write fails: its reply is an internal error, the other
    two get their blocks (each stepped alone after the failed batch), and all three go on."""
    from runtime import protocol as P
    from runtime.server import Server, ServerOptions
    from test_runtime_dispatch import TOKENS, Outbox, call, with_token

    together, alone = (Server(backend, ServerOptions(), log=open("/dev/null", "w")) for _ in range(2))
    together.router = Outbox()
    clients = [b"a", b"b", b"c"]
    for i, c in enumerate(clients):
        for srv in (together, alone):
            call(srv, c, {"op": "reset", "seed": 20 + i})
    bad = together.sessions.get(TOKENS[(id(together), b"b")]).engine

    def no_room(memory, frames):
        raise KVMemoryError("no room")

    rng = np.random.default_rng(8)
    # the batch each client's reply reports, by block: block 2 fails b's write (a and c then step
    # alone), so in block 3 b is a block behind: a and c together, b alone
    batch = {0: [3, 3, 3], 1: [3, 3, 3], 2: [1, None, 1], 3: [2, 1, 2]}
    for block in range(4):
        if block == 2:
            monkeypatch.setattr(bad.strategy, "choose_slots", no_room)
        if block == 3:
            monkeypatch.undo()
        steps = {c: {"op": "step", "id": f"{c.decode()}{block}",
                     "actions": np.round(rng.uniform(-1, 1, (3, 4)), 2).tolist()} for c in clients}
        together._serve_messages([[c, json.dumps(with_token(together, c, steps[c])).encode()] for c in clients])
        for c, size in zip(clients, batch[block]):
            head, frames = together.router.sent[c][-1]
            if size is None:
                assert head["error"]["code"] == P.INTERNAL and "no room" in head["error"]["message"]
                continue
            want, want_frames = call(alone, c, steps[c])
            assert head["status"] == "ok" and head["first_frame"] == want["first_frame"]
            assert head["memory"] == want["memory"] and head["timings"]["batch"] == size
            assert_same_frames(np.frombuffer(frames[0], np.uint8), np.frombuffer(want_frames[0], np.uint8))
