"""On a CUDA GPU: the cudagraph backend's captured graphs make the torch backend's frames, sessions
batched on the GPU make the blocks they make alone (eager, and as the cudagraph backend's batched
graphs), and the Wan2.1-1.3B-shape loop runs captured
(at a reduced size: 2 layers, 240x416, a 4-slot memory so that retrieval and eviction happen
within a few blocks). Marked `gpu`: skipped without one; `bash scripts/gpu/test.sh` runs them.

Tolerances, stated once:
  fp32 graphs vs fp32 eager: the same frames as on CPU (tests/test_runtime_cudagraph.py: at most 1
    grey level apart, on under 1% of pixels), with TF32 off so only summation order differs.
  bf16 graphs vs fp32 eager (the served precision): per block, mean |difference| <= 2 grey levels
    and PSNR >= 40 dB between the two frames. On this project's 2-core CPU the same comparison
    gives 0.4-0.5 levels and 50 dB over 8 blocks; two unrelated frames of this model differ by
    ~12 dB, so the bound does tell right from wrong.
  bf16 batched graphs vs bf16 graphs alone: the bound of bf16 vs fp32 above (each is bf16 rounding
    of the same maths, batched GEMMs summing in another order).
  bf16 Wan-shape latents vs fp32 eager: ||graph - eager|| / ||eager|| <= 3e-2 per block (bf16 operands
    land between 1e-3 and 1e-2 per pass; 4 denoising steps and a memory built from bf16 K/V add up).
"""

import contextlib
import copy

import numpy as np
import pytest
import torch

from export_helpers import checkpoint, random_block
from runtime.backends import load_backend
from test_export_backend import assert_same_frames, assert_same_memory
from test_runtime_cudagraph import observe_then_step_alike
from test_runtime_cudagraph_batch import assert_same_state

pytestmark = pytest.mark.gpu


@contextlib.contextmanager
def no_tf32():
    """fp32 comparisons: cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere and later."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def test_fp32_graphs_make_the_torch_backends_frames_on_cuda():
    with no_tf32():
        eager = load_backend("torch", checkpoint("mag"), "cuda")
        graphs = load_backend("cudagraph", checkpoint("mag"), "cuda", precision="fp32")
        a, b = eager.new_session(seed=4), graphs.new_session(seed=4)
        assert graphs.runner.capture and graphs.runner.captured > 0  # captured at session start
        captured = graphs.runner.captured
        rng = np.random.default_rng(4)
        for block in range(27):  # past the attention budget (retrieval) and the capacity (eviction)
            actions, poses = random_block(rng)
            scene = [None, 2, -1][block % 3]
            assert_same_frames(a.step(actions, poses, scene), b.step(actions, poses, scene))
        assert graphs.runner.captured == captured  # no capture inside the session's blocks
        assert b.memory_state()["evictions"] > 0
        assert_same_memory(a, b, atol=1e-3)
        slot = int(a.memory_state()["slots"][0]["slot"])
        assert_same_frames(a.decode_slot(slot), b.decode_slot(slot))


@pytest.mark.parametrize("strategy", ["window", "full"])
def test_fp32_graphs_observe_and_step_like_the_torch_backend_on_cuda(strategy):
    with no_tf32():
        a = load_backend("torch", checkpoint(strategy), "cuda").new_session(seed=2)
        b = load_backend("cudagraph", checkpoint(strategy), "cuda", precision="fp32").new_session(seed=2)
        observe_then_step_alike(a, b)


def test_bf16_graphs_make_the_torch_backends_frames_to_bf16_tolerance():
    a = load_backend("torch", checkpoint("mag"), "cuda").new_session(seed=4)
    graphs = load_backend("cudagraph", checkpoint("mag"), "cuda")
    assert graphs.precision == "bf16"  # the default on CUDA
    b = graphs.new_session(seed=4)
    rng = np.random.default_rng(4)
    previous = None
    for _ in range(8):
        actions, poses = random_block(rng)
        fa, fb = a.step(actions, poses, None), b.step(actions, poses, None)
        diff = np.abs(fa.astype(int) - fb.astype(int))
        assert diff.mean() <= 2.0 and psnr(fa, fb) >= 40.0, f"mean |diff| {diff.mean():.2f}, PSNR {psnr(fa, fb):.1f} dB"
        if previous is not None:
            assert psnr(fa, previous) < 30.0  # the bound above can fail: another frame is far off
        previous = fa


def test_a_session_after_a_freed_one_still_captures_and_makes_the_same_frames():
    """`magworld serve` warms up on a throwaway session: the next session's captures must work
    (with one pool for all sessions PyTorch asserted at the first capture after the throwaway's
    graphs were freed) and make the frames a first session makes."""
    import gc

    graphs = load_backend("cudagraph", checkpoint("mag"), "cuda")
    rng = np.random.default_rng(6)
    blocks = [random_block(rng) for _ in range(4)]
    first = graphs.new_session(seed=5)
    expect = [first.step(actions, poses, None) for actions, poses in blocks]
    del first
    gc.collect()
    torch.cuda.synchronize()
    again = graphs.new_session(seed=5)
    for (actions, poses), frames in zip(blocks, expect):
        assert psnr(again.step(actions, poses, None), frames) >= 45.0  # the same graphs, the same seed


def test_batched_sessions_on_cuda_make_the_blocks_they_make_alone():
    from worldmodel.bundle import WorldModel
    from worldmodel.config import preset
    from worldmodel.rollout_batch import generate_together

    with no_tf32():
        model = WorldModel.random(preset("tiny"), seed=0).to("cuda")
        rng = np.random.default_rng(0)
        alone = [model.rollout("mag") for _ in range(3)]
        together = [model.rollout("mag") for _ in range(3)]
        m = model.config.model
        for i, (a, b) in enumerate(zip(alone, together)):  # different histories: different attended slots
            for _ in range(5 * i):
                actions, poses = (torch.from_numpy(t[None]) for t in random_block(rng))
                x = torch.randn(1, 3, m.latent_channels, m.latent_height, m.latent_width, device="cuda")
                a.observe(x, actions, poses)
                b.observe(x, actions, poses)
        g_alone = [torch.Generator("cuda").manual_seed(10 + i) for i in range(3)]
        g_together = [torch.Generator("cuda").manual_seed(10 + i) for i in range(3)]
        for _ in range(8):
            blocks = [tuple(torch.from_numpy(t[None]) for t in random_block(rng)) for _ in range(3)]
            scenes = [None, torch.tensor([2], device="cuda"), None]
            expect = torch.cat([r.generate(a, s, p, generator=g)
                                for r, (a, p), s, g in zip(alone, blocks, scenes, g_alone)])
            got = generate_together(together, [a for a, _ in blocks], scenes, [p for _, p in blocks], g_together)
            assert got.is_cuda
            torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)
        for a, b in zip(alone, together):
            np.testing.assert_array_equal(a.memory.frame, b.memory.frame)


def test_batched_captured_sessions_make_the_blocks_they_make_alone():
    """Five sessions, two of them a block behind, stepped through the cudagraph backend's
    step_many (graph_batch.py) against the same five stepped alone, fp32: until every session
    holds the budget's 12 slots they run as a padded batch of 4 (3 sessions) and one of 2, each
    group at its own n, graphs captured at first use; from then on as one padded batch of 8 at
    n = S, whose graphs were captured when the sessions started: no capture in those blocks.
    Retrieval and eviction (the tiny model's 24 slots) happen inside the batch."""
    with no_tf32():
        graphs = load_backend("cudagraph", checkpoint("mag"), "cuda", precision="fp32")
        alone = [graphs.new_session(seed=s) for s in range(5)]
        together = [graphs.new_session(seed=s) for s in range(5)]
        batches = together[0].batches
        assert batches.sizes == (2, 4, 8) and batches.steady == 12
        rng = np.random.default_rng(9)
        for block in range(27):
            active = range(5) if block else range(3)
            blocks = [random_block(rng) for _ in active]
            scenes = [[None, 2, -1][(block + i) % 3] for i in active]
            if block == 13:
                captured = graphs.runner.captured
            want = [alone[i].step(a, p, sc) for i, (a, p), sc in zip(active, blocks, scenes)]
            got = graphs.step_many([together[i] for i in active], [a for a, _ in blocks], [p for _, p in blocks],
                                   scenes)
            for w, g in zip(want, got):
                assert not isinstance(g, Exception), g
                assert_same_frames(w, g)
            assert graphs.last_pass_sizes == ([3] * 3 if block == 0 else [3] * 3 + [2] * 2 if block <= 12 else [5] * 5)
        assert graphs.runner.captured == captured  # every block at n = S replayed what prepare captured
        assert together[0].memory_state()["evictions"] > 0
        for a, b in zip(alone, together):
            assert_same_state(a, b, atol=1e-3)


def test_bf16_batched_graphs_make_the_blocks_of_bf16_graphs_alone():
    graphs = load_backend("cudagraph", checkpoint("mag"), "cuda")
    alone = [graphs.new_session(seed=s) for s in range(3)]
    together = [graphs.new_session(seed=s) for s in range(3)]
    rng = np.random.default_rng(10)
    for _ in range(8):
        blocks = [random_block(rng) for _ in range(3)]
        want = [s.step(a, p, None) for s, (a, p) in zip(alone, blocks)]
        got = graphs.step_many(together, [a for a, _ in blocks], [p for _, p in blocks], [None] * 3)
        assert graphs.last_pass_sizes == [3, 3, 3]
        for fa, fb in zip(want, got):
            diff = np.abs(fa.astype(int) - fb.astype(int))
            assert diff.mean() <= 2.0 and psnr(fa, fb) >= 40.0, f"mean |diff| {diff.mean():.2f}, PSNR {psnr(fa, fb):.1f} dB"


def wan_shape():
    """Wan2.1-T2V-1.3B's transformer widths (d 1536, 12 heads of 128, FFN 8960, 512 prompt tokens
    of 4096) at 2 layers and 240x416 (390 tokens a frame), a 4-slot MAG memory."""
    from worldmodel.config import apply_overrides, preset

    return apply_overrides(preset("wan-1.3b"), [
        "autoencoder.frame_height=240", "autoencoder.frame_width=416", "autoencoder.base_channels=8",
        "autoencoder.max_channels=16", "model.latent_height=30", "model.latent_width=52", "model.layers=2",
        "memory.capacity_frames=4", "memory.attention_budget=4"])


def test_the_wan_shape_loop_runs_captured_and_follows_the_eager_loop():
    wan_shape_loop_follows_the_eager_loop(compile=False)


def test_the_compiled_wan_shape_loop_runs_captured_and_follows_the_eager_loop():
    """compile=True (worldmodel/model/fused.py): inductor's kernels for the token paths, compiled
    before the first capture and replayed inside every graph, to the same tolerance; three
    compiles (attention_in, attention_out, the head) per batch size captured (1, and 2/4/8 of the
    batched graphs that the first session captures), whatever the number of slots n = 0..4."""
    from worldmodel.model.fused import compiled_graphs

    before = compiled_graphs()
    backend = wan_shape_loop_follows_the_eager_loop(compile=True)
    sizes = {1} | {b for batches in backend.batches.values() for b in batches.batches}
    assert backend.compiled == "default" and compiled_graphs() - before <= 3 * len(sizes), sizes


def wan_shape_loop_follows_the_eager_loop(compile: bool):
    """The captured bf16 loop against the fp32 eager Rollout, block by block; returns the backend."""
    from runtime.backends.cudagraph_backend import CudaGraphBackend
    from worldmodel.autoencoder import Autoencoder
    from worldmodel.bundle import WorldModel
    from worldmodel.model import CausalDiT
    from worldmodel.rollout import Rollout

    cfg = wan_shape()
    torch.manual_seed(0)
    model = CausalDiT(cfg.model).eval()
    with torch.no_grad():  # as bench generate: random weights, not the zero init
        for p in model.parameters():
            p.normal_(0, 0.02)
    with no_tf32():
        roll = Rollout(copy.deepcopy(model).cuda(), cfg.sampler, cfg.memory)  # fp32 reference
        world = WorldModel(cfg, Autoencoder(cfg.autoencoder), copy.deepcopy(model), None)
        backend = CudaGraphBackend(None, "cuda", "bf16", model=world, compile=compile)
        session = backend.new_session(seed=0)
        captured = backend.runner.captured
        g = torch.Generator("cuda").manual_seed(0)
        actions = np.zeros((3, 4), np.float32)
        actions[:, 2] = 10.0
        for block in range(7):  # past the 4-slot budget and the capacity: retrieval and eviction
            expect = roll.generate(torch.from_numpy(actions[None]), generator=g)
            got = session.generate_latents(actions)
            assert session.held == min(block, 4)
            rel = float((got.float() - expect).norm() / expect.norm())
            assert expect.norm() > 0 and rel <= 3e-2, f"block {block}: relative error {rel:.2e}"
        assert session.memory.evictions > 0
        assert backend.runner.captured == captured  # every graph made at session start
    return backend


def test_the_fused_attention_kernels_run_and_the_profile_sees_them():
    """The steady-state pass (every slot valid: no mask) takes a fused SDPA kernel, and the
    profiler split that bench generate reports finds attention and matmul time in it."""
    from worldmodel.bench_generate import profile_pass
    from worldmodel.model import CausalDiT

    cfg = wan_shape()
    model = CausalDiT(cfg.model).to("cuda", torch.bfloat16).eval()
    split = profile_pass(cfg, model, torch.bfloat16, "cuda", slots=4)
    assert split["attention"] > 0 and split["matmul"] > 0, split
