"""MemoryPack baseline: the SemanticPack state ψ, the per-frame context of the DiT, the window-
limited training mask, the `memorypack` strategy in Rollout, its training stage, packaging and the
revisit row."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randomize
from helpers import clip_inputs, tiny_model
from train_helpers import snapshotting_trainer
from worldmodel.bundle import WorldModel
from worldmodel.config import preset
from worldmodel.memory import KVMemory, make_strategy
from worldmodel.model.masks import block_causal, teacher_forcing, window_forcing
from worldmodel.model.semantic_pack import SemanticPack
from worldmodel.rollout import Rollout
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.distributed import DistInfo
from worldmodel.train.stage import TrainOptions
from worldmodel.train.stage_memorypack import MemoryPackStage
from worldmodel.train.synthetic import SyntheticClips
from worldmodel.train.trainer import Trainer

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def block(cfg, seed):
    m = cfg.model
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, m.block_frames, m.latent_channels, m.latent_height, m.latent_width, generator=g)


def random_pack(cfg, seed=0):
    torch.manual_seed(seed)
    return randomize(SemanticPack(cfg.model, cfg.memory), seed, 0.2).eval()


# ------------------------------------------------------------------------------- SemanticPack


def test_pack_state_has_m_tokens_of_the_prompt_width_and_follows_the_block(tiny):
    pack = random_pack(tiny)
    m = tiny.model
    prompt = torch.randn(2, m.text_tokens, m.text_dim)
    psi0 = pack.initial_state(prompt)
    assert psi0.shape == (2, tiny.memory.pack_tokens, m.text_dim)
    x = torch.cat([block(tiny, 1), block(tiny, 2)])
    psi1 = pack.update(psi0, x)
    assert psi1.shape == psi0.shape
    assert not torch.allclose(psi1, psi0, atol=1e-3), "a block must change the state"
    other = pack.update(psi0, torch.cat([block(tiny, 3), block(tiny, 2)]))
    assert not torch.allclose(other[0], psi1[0], atol=1e-3), "another block, another state"
    torch.testing.assert_close(other[1], psi1[1]), "samples of a batch are independent"
    assert not torch.allclose(pack.initial_state(prompt[[1, 0]])[0], psi0[0], atol=1e-3), "ψ_0 follows the prompt"


def test_pack_state_stays_finite_and_bounded_over_200_updates(tiny):
    pack = random_pack(tiny)
    psi = pack.initial_state(torch.randn(1, tiny.model.text_tokens, tiny.model.text_dim))
    with torch.no_grad():
        for i in range(200):
            psi = pack.update(psi, 10.0 * block(tiny, i))
    assert torch.isfinite(psi).all()
    # LayerNorm output: |ψ| <= sqrt(D) * max|weight| + max|bias| per token
    norm = pack.out_norm
    bound = tiny.model.text_dim ** 0.5 * norm.weight.abs().max() + norm.bias.abs().max()
    assert psi.abs().max() <= bound


def test_states_over_a_clip_equal_updates_block_by_block(tiny):
    pack = random_pack(tiny)
    bf = tiny.model.block_frames
    clip = torch.cat([block(tiny, i) for i in range(4)], 1)  # [1, 4*Bf, ...]
    prompt = torch.randn(1, tiny.model.text_tokens, tiny.model.text_dim)
    states = pack.states(prompt, clip)
    assert states.shape == (1, 4, tiny.memory.pack_tokens, tiny.model.text_dim)
    psi = pack.initial_state(prompt)
    for j in range(4):
        torch.testing.assert_close(states[:, j], psi, rtol=1e-5, atol=1e-5)
        psi = pack.update(psi, clip[:, j * bf:(j + 1) * bf])


# ------------------------------------------------------------------------------- DiT context


def test_per_frame_context_equals_the_shared_context_when_every_frame_gets_the_same(tiny):
    model = tiny_model(tiny)
    x, t, a = clip_inputs(tiny, frames=6)
    pos = torch.arange(6)
    context = torch.randn(2, 5, tiny.model.text_dim)  # more tokens than the prompt: [prompt ; ψ]
    shared = model(x, t, a, pos, context)
    per_frame = model(x, t, a, pos, context[:, None].expand(-1, 6, -1, -1))
    torch.testing.assert_close(per_frame, shared, rtol=1e-5, atol=1e-5)
    # and each frame reads its own context: a new context for block 1 leaves block 0 as it was
    mask = block_causal(6, 3)
    before = model(x, t, a, pos, context, frame_mask=mask)
    moved = context[:, None].repeat(1, 6, 1, 1)
    moved[:, 3:] = torch.randn_like(moved[:, 3:])
    out = model(x, t, a, pos, moved, frame_mask=mask)
    torch.testing.assert_close(out[:, :3], before[:, :3], rtol=1e-5, atol=1e-5)
    assert (out[:, 3:] - before[:, 3:]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="one context per frame"):
        model(x, t, a, pos, context[:, None].expand(-1, 4, -1, -1))


# ------------------------------------------------------------------------------- training mask


def test_window_mask_shows_each_block_what_the_window_strategy_holds(tiny):
    frames, bf = 24, 3
    tiny.memory.strategy = "memorypack"  # the window's K/V
    tiny.memory.window_frames, tiny.memory.sink_frames = 6, 3
    mask = window_forcing(frames, bf, 6, 3)
    strategy = make_strategy(tiny.memory, bf)
    memory = KVMemory(tiny.model, capacity=24)
    shape = (tiny.model.layers, 1, bf, tiny.model.tokens_per_frame, tiny.model.heads, tiny.model.head_dim)
    for j in range(frames // bf):
        held = set(memory.frame[memory.frame >= 0].tolist())
        for q in range(j * bf, (j + 1) * bf):
            for half in (0, frames):  # the clean and the noisy copy of the block
                seen = {k for k in range(j * bf) if mask[half + q, k]}
                assert seen == held, (j, q, half)
                own = [k for k in range(j * bf, frames) if mask[half + q, half + k]]
                assert own == list(range(j * bf, (j + 1) * bf)), "its own block, nothing later"
            noisy = [k for k in range(frames) if mask[frames + q, frames + k]]
            assert noisy == list(range(j * bf, (j + 1) * bf)), "no other noisy block"
        strategy.write_block(memory, [(torch.zeros(shape[1:]), torch.zeros(shape[1:]))] * shape[0],
                             torch.arange(j * bf, (j + 1) * bf))
    assert not mask[:frames, frames:].any(), "clean frames never see noisy ones"
    assert torch.equal(window_forcing(12, 3, 12, 0), teacher_forcing(12, 3)), "a window as long as the clip"


# ------------------------------------------------------------------------------- Rollout


def test_memorypack_rollout_keeps_the_window_slots_and_one_state_and_reset_clears_it(tiny):
    tiny.memory.strategy = "memorypack"
    gen = tiny_model(tiny)
    roll = Rollout(gen, tiny.sampler, tiny.memory, semantic_pack=random_pack(tiny))
    states = []
    for i in range(10):
        roll.generate(torch.zeros(1, 3, 4), generator=torch.Generator().manual_seed(i))
        assert roll.memory.num_used == min(3 * (i + 1), tiny.memory.sink_frames + tiny.memory.window_frames)
        assert roll.pack_state.shape == (1, tiny.memory.pack_tokens, tiny.model.text_dim)
        states.append(roll.pack_state.clone())
    frames = sorted(roll.memory.frame[roll.memory.frame >= 0].tolist())
    assert frames == [0, 1, 2] + list(range(30 - tiny.memory.window_frames, 30)), "the window's frames"
    assert not torch.allclose(states[-1], states[-2], atol=1e-4), "every block updates ψ"
    assert roll.pack_bytes() == tiny.memory.pack_tokens * tiny.model.text_dim * 4
    roll.reset()
    assert roll.pack_state is None and roll.pack_bytes() == 0 and roll.memory.num_used == 0


def test_memorypack_generation_reads_the_state(tiny):
    """The same window and noise, another history beyond the window: only ψ differs."""
    tiny.memory.strategy = "memorypack"
    tiny.memory.window_frames, tiny.memory.sink_frames = 3, 0
    gen, pack = tiny_model(tiny), random_pack(tiny)

    def next_block(first_seed):
        roll = Rollout(gen, tiny.sampler, tiny.memory, semantic_pack=pack)
        for seed in (first_seed, 7):  # the first block falls out of the window
            roll.observe(block(tiny, seed), torch.zeros(1, 3, 4))
        assert sorted(roll.memory.frame[roll.memory.frame >= 0].tolist()) == [3, 4, 5]
        roll.memory.k.zero_()  # block 0 also shaped block 1's K/V: make the K/V memories equal
        roll.memory.v.zero_()
        return roll.generate(torch.zeros(1, 3, 4), generator=torch.Generator().manual_seed(0)), roll.pack_state

    (a, psi_a), (b, psi_b) = next_block(1), next_block(1)
    assert torch.equal(a, b) and torch.equal(psi_a, psi_b)
    b, psi_b = next_block(2)
    assert (psi_a - psi_b).abs().max() > 1e-4
    assert (a - b).abs().max() > 1e-5, "a block beyond the window reaches the new block through ψ"


def test_memorypack_without_a_pack_is_refused_and_other_strategies_ignore_it(tiny):
    tiny.memory.strategy = "memorypack"
    with pytest.raises(ValueError, match="semantic_pack"):
        Rollout(tiny_model(tiny), tiny.sampler, tiny.memory)
    tiny.memory.strategy = "window"
    gen = tiny_model(tiny)
    with_pack = Rollout(gen, tiny.sampler, tiny.memory, semantic_pack=random_pack(tiny))
    plain = Rollout(gen, tiny.sampler, tiny.memory)
    for roll in (with_pack, plain):
        roll.generate(torch.zeros(1, 3, 4), generator=torch.Generator().manual_seed(0))
    assert with_pack.pack_state is None
    assert torch.equal(with_pack.memory.k, plain.memory.k)


# ------------------------------------------------------------------------------- training stage


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny autoencoder run and a 4-step generator run to start the stage from."""
    root = tmp_path_factory.mktemp("mp_runs")
    cfg = preset("tiny")
    wm = WorldModel.random(cfg)
    for run, name, module in [("ae", "autoencoder", wm.autoencoder), ("gen", "generator", wm.generator)]:
        d = root / run / "checkpoint"
        d.mkdir(parents=True)
        ckpt.save_config(d, cfg)
        ckpt.save_weights(d, name, module.state_dict())
    return root


def options(runs, out, **kw):
    base = dict(out=Path(out), max_steps=3, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1,
                checkpoint_every_min=0,
                extra={"autoencoder": str(runs / "ae"), "init": str(runs / "gen"), "clip_blocks": 5})
    base.update(kw)
    return TrainOptions(**base)


def make_trainer(opts, trainer_cls=Trainer):
    cfg = preset("tiny")
    a = cfg.autoencoder

    def make_dataset(clip_frames, seed):
        return SyntheticClips(clip_frames, a.frame_height, a.frame_width, num_clips=8, seed=seed)

    return trainer_cls(MemoryPackStage(cfg, opts, CPU), make_dataset, opts, CPU, progress=False)


def full_state(stage):
    state = {f"gen.{k}": v for k, v in stage.generator.state_dict().items()}
    state.update({f"pack.{k}": v for k, v in stage.pack.state_dict().items()})
    state.update({f"ema.{k}": v for k, v in stage.ema.shadow.items()})
    state.update({f"pack_ema.{k}": v for k, v in stage.pack_ema.shadow.items()})
    for i, s in stage.optimizer.state_dict()["state"].items():
        state.update({f"opt.{i}.{k}": v for k, v in s.items()})
    return state


def test_stage_trains_generator_and_pack_and_resumes_bit_for_bit(runs, tmp_path):
    snapshot = tmp_path / "at_step_2"

    straight = make_trainer(options(runs, tmp_path / "a", checkpoint_every_steps=2), snapshotting_trainer(2, snapshot))
    straight.run()
    assert straight.step == 3
    stage = straight.stage
    start = ckpt.load_weights(runs / "gen" / "checkpoint", "generator")
    assert any(not torch.equal(p, start[k]) for k, p in stage.generator.state_dict().items()), "generator trained"
    assert stage.pack.patch_embedding.weight.grad.abs().sum() > 0, "the loss reaches Memorize"
    assert stage.pack.init_queries.grad.abs().sum() > 0, "the loss reaches ψ_0"

    (tmp_path / "b").mkdir()
    shutil.copytree(snapshot, tmp_path / "b" / "checkpoint")
    resumed = make_trainer(options(runs, tmp_path / "b", resume=True))
    resumed.run()
    a, b = full_state(straight.stage), full_state(resumed.stage)
    assert set(a) == set(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different[:5]}"
    shipped = sorted(p.name for p in (tmp_path / "a" / "checkpoint").glob("*.safetensors"))
    assert shipped == ["generator.safetensors", "semantic_pack.safetensors"]


def test_stage_needs_a_generator_to_start_from(runs, tmp_path):
    opts = options(runs, tmp_path)
    opts.extra.pop("init")
    with pytest.raises(ValueError, match="--init"):
        MemoryPackStage(preset("tiny"), opts, CPU).build()


# ------------------------------------------------------------------------------- package, load, eval, export


@pytest.fixture(scope="module")
def memorypack_checkpoint(runs, tmp_path_factory):
    """A packaged checkpoint from a (one-step) memorypack run."""
    from worldmodel.train.package import package

    root = tmp_path_factory.mktemp("mp_ckpt")
    make_trainer(options(runs, root / "run", max_steps=1)).run()
    return package(root / "ckpt", runs / "ae", root / "run", None, dtype="float32")


def test_package_ships_the_pack_and_load_restores_it(memorypack_checkpoint):
    names = sorted(p.name for p in memorypack_checkpoint.glob("*.safetensors"))
    assert names == ["autoencoder.safetensors", "generator.safetensors", "semantic_pack.safetensors"]
    model = WorldModel.load(memorypack_checkpoint)
    assert model.semantic_pack is not None and model.config.memory.strategy == "memorypack"
    shipped = ckpt.load_weights(memorypack_checkpoint.parent / "run" / "checkpoint", "semantic_pack")
    assert all(torch.equal(v, shipped[k]) for k, v in model.semantic_pack.state_dict().items())
    roll = model.rollout()
    assert roll.strategy.name == "memorypack" and roll.semantic_pack is model.semantic_pack


def test_revisit_eval_adds_the_memorypack_row_with_window_kv_plus_state(memorypack_checkpoint):
    from worldmodel.data.revisit import RevisitCase
    from worldmodel.eval.revisit import revisit_benchmark

    rng = np.random.default_rng(0)
    n, m = 18, 9
    frames = rng.integers(0, 255, (n, 24, 32, 3), dtype=np.uint8)
    poses = np.zeros((n, 5), np.float32)
    case = RevisitCase("c0", "freedoom2.wad:MAP07", -1, "look-around", m, [(12, 3), (17, 0)],
                       frames, np.zeros((n, 4), np.float32), poses)
    main = WorldModel.random(preset("tiny"))
    mp = WorldModel.load(memorypack_checkpoint)
    result = revisit_benchmark(main, [case], ["window", "memorypack"], max_cases=1, progress=False, memorypack=mp)
    table = result["table"]
    assert set(table) == {"window", "memorypack", "copy-last"}
    row = table["memorypack"]
    assert row["revisit_frames"] == table["window"]["revisit_frames"] == 2
    assert np.isfinite([row["gt_psnr"], row["gt_ssim"], row["hist_psnr"]]).all()
    psi_bytes = mp.config.memory.pack_tokens * mp.config.model.text_dim * 4
    assert row["kv_bytes_held"] == table["window"]["kv_bytes_held"] + psi_bytes
    with pytest.raises(ValueError, match="--memorypack"):
        revisit_benchmark(main, [case], ["memorypack"], max_cases=1, progress=False)


def test_export_refuses_memorypack_and_says_what_to_do(tiny):
    from export.manifest import ExportError
    from export.onnx_export import MemoryLayout

    tiny.memory.strategy = "memorypack"
    with pytest.raises(ExportError, match="torch backend"):
        MemoryLayout.of(tiny, has_memory_model=False)


def test_the_torch_backend_serves_memorypack_and_counts_the_state_as_held(memorypack_checkpoint):
    from runtime.backends import load_backend

    session = load_backend("torch", memorypack_checkpoint, "cpu").new_session(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
    frames = session.step(actions, None, None)
    assert frames.shape[0] == 3 and frames.dtype == np.uint8
    state = session.memory_state()
    mem = session.rollout.memory
    assert state["strategy"] == "memorypack" and state["pack_bytes"] == session.rollout.pack_bytes() > 0
    assert state["bytes_held"] == mem.num_used * mem.bytes_per_slot + state["pack_bytes"]
