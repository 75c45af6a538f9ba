"""Stage 2 with long histories: the slot table is what inference writes, sub-histories are sampled
as documented, the generator attends to them, and a run resumes exactly (tiny preset)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from train_helpers import save_tiny_runs
from worldmodel.bundle import WorldModel
from worldmodel.config import preset
from worldmodel.model.masks import memory_write
from worldmodel.rollout import Rollout
from worldmodel.train.distributed import DistInfo
from worldmodel.train.stage import TrainOptions
from worldmodel.train.stage_generator import GeneratorStage
from worldmodel.train.sub_history import build_slot_table, sample_sub_history
from worldmodel.train.synthetic import SyntheticClips
from worldmodel.train.trainer import Trainer

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return save_tiny_runs(tmp_path_factory.mktemp("runs"))


def test_memory_write_mask_equals_brute_force():
    for frames, block, window in [(12, 3, None), (12, 3, 2), (10, 2, 1), (8, 4, None), (6, 1, 3)]:
        mask = memory_write(frames, block, window)
        for q in range(frames):
            for k in range(frames):
                qb, kb = q // block, k // block
                kept = k % block == block - 1
                want = qb == kb or (kb < qb and kept and (window is None or qb - kb <= window))
                assert bool(mask[q, k]) == want, (frames, block, window, q, k)


@pytest.mark.parametrize("window", [None, 2])
def test_one_pass_slot_table_equals_writing_the_blocks_one_by_one(window):
    """window None: as `mag (all slots)` writes; window W: as `mag` without retrieval and budget W."""
    cfg = preset("tiny")
    cfg.memory.strategy = "mag"
    if window is not None:
        cfg.memory.attention_budget = window
    wm = WorldModel.random(cfg, seed=3)
    blocks, bf = 6, cfg.model.block_frames
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, blocks * bf, 4, 3, 4, generator=g)
    actions = torch.randn(1, blocks * bf, 4, generator=g).clamp(-1, 1)
    roll = Rollout(wm.generator, cfg.sampler, cfg.memory, memory_model=wm.memory_model, capacity=blocks)
    roll.retrieval = False
    for j in range(0, blocks * bf, bf):
        roll.observe(latents[:, j:j + bf], actions[:, j:j + bf])
    table = build_slot_table(wm.memory_model, latents, actions, torch.arange(blocks * bf),
                             memory_write(blocks * bf, bf, window), lambda: torch.autocast("cpu", enabled=False))
    slots = roll.memory.used_slots()
    assert table.k.shape == (cfg.model.layers, 1, blocks, cfg.model.tokens_per_frame, cfg.model.heads,
                             cfg.model.head_dim)
    assert table.frames.tolist() == roll.memory.frame[slots].tolist() == [2, 5, 8, 11, 14, 17]
    torch.testing.assert_close(table.k, roll.memory.k[:, :, slots], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(table.v, roll.memory.v[:, :, slots], atol=1e-5, rtol=1e-4)
    if window is not None:  # a too-narrow mask would not match: the test can tell them apart
        narrow = build_slot_table(wm.memory_model, latents, actions, torch.arange(blocks * bf),
                                  memory_write(blocks * bf, bf, 1), lambda: torch.autocast("cpu", enabled=False))
        assert not torch.allclose(narrow.k, table.k, atol=1e-5)


def test_sub_histories_keep_the_newest_slots_and_cover_every_size():
    torch.manual_seed(0)
    assert sample_sub_history(10, 3, 1.0).tolist() == list(range(10))
    assert sample_sub_history(0, 3, 0.0).tolist() == []
    sizes = set()
    for _ in range(400):
        keep = sample_sub_history(10, 3, 0.0)
        sizes.add(len(keep))
        assert np.all(np.diff(keep) > 0) and (len(keep) == 0 or keep[-1] < 10)
        assert set(range(10 - min(len(keep), 3), 10)) <= set(keep.tolist()), keep
    assert sizes == set(range(11))


def make_stage(runs, tmp_path, **extra):
    base = {"autoencoder": str(runs / "ae"), "teacher": str(runs / "teacher"),
            "memory_model": str(runs / "memory_model"), "critic_steps": 1, "clip_blocks": 3}
    opts = TrainOptions(out=Path(tmp_path), max_steps=3, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1,
                        checkpoint_every_min=0, extra={**base, **extra})
    torch.manual_seed(0)
    return GeneratorStage(preset("tiny"), opts, CPU)


def test_the_generator_attends_to_the_history_slots_and_its_own(runs, tmp_path, monkeypatch):
    stage = make_stage(runs, tmp_path, history_blocks=5, history_full_prob=1.0)
    stage.build()
    assert stage.clip_frames == (5 + 3) * 3 and stage.mask.shape == (18, 18)
    seen = []
    real = stage.generator.forward

    def spy(x, t, actions, frame_pos, *a, memory=None, **kw):
        if memory is not None:
            held = memory.valid if memory.valid.dim() == 1 else memory.valid[0]
            seen.append((int(held.sum()), int(frame_pos[0])))
        return real(x, t, actions, frame_pos, *a, memory=memory, **kw)

    monkeypatch.setattr(stage.generator, "forward", spy)
    data = SyntheticClips(stage.clip_frames, 24, 32, num_clips=2, seed=0)
    batch = {k: torch.stack([torch.as_tensor(data.clip(i)[k]) for i in range(2)]) for k in data.clip(0)}
    stage.train_step(batch, 1)
    # block 1 of the clip sees 5 history slots + the context block's; block 2 one more
    slots = sorted({s for s, _ in seen})
    assert slots == [6, 7], seen
    starts = sorted({p for _, p in seen})
    assert len(starts) == 2 and starts[1] - starts[0] == 3 and starts[0] % 3 == 0 and starts[0] >= 18


def test_without_history_the_stage_is_the_short_clip_stage(runs, tmp_path):
    stage = make_stage(runs, tmp_path)
    stage.build()
    assert stage.clip_frames == 9 and stage.history_blocks == 0


def _run(runs, out, **kw):
    stage = make_stage(runs, out, history_blocks=4, history_full_prob=0.3)
    stage.options = TrainOptions(**{**stage.options.__dict__, "out": Path(out), **kw})

    def make_dataset(clip_frames, seed):
        return SyntheticClips(clip_frames, 24, 32, num_clips=8, seed=seed)

    return Trainer(stage, make_dataset, stage.options, CPU, progress=False)


def test_a_long_history_run_resumes_bit_for_bit(runs, tmp_path):
    from worldmodel.train.metrics_log import read_metrics

    class Snapshotting(Trainer):
        def save(self, final):
            super().save(final)
            if self.step == 2:
                shutil.copytree(self.checkpoint_dir, tmp_path / "snap")

    straight = _run(runs, tmp_path / "a", checkpoint_every_steps=2)
    straight.__class__ = Snapshotting
    straight.run()
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "snap", tmp_path / "b" / "checkpoint")
    resumed = _run(runs, tmp_path / "b", resume=True)
    resumed.run()
    assert straight.step == resumed.step == 3
    for name in ("generator", "fake_score"):
        a, b = straight.stage.models()[name].state_dict(), resumed.stage.models()[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    ma, mb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert ma["dmd_loss"][-1] == mb["dmd_loss"][-1] and np.isfinite(ma["dmd_loss"][-1][1])
