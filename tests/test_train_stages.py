"""Every latent training stage runs one step and lowers its loss on a fixed batch (tiny preset)."""

from pathlib import Path

import pytest
import torch

from train_helpers import save_tiny_runs
from worldmodel.config import preset
from worldmodel.model.masks import mag_stage1
from worldmodel.train.distributed import DistInfo
from worldmodel.train.stage import TrainOptions
from worldmodel.train.stage_generator import history_loss_scenes
from worldmodel.train.stages import load_stage
from worldmodel.train.synthetic import SyntheticClips

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny autoencoder, teacher and memory model saved as runs, to initialise stages from."""
    return save_tiny_runs(tmp_path_factory.mktemp("runs"))


def make_stage(name, runs, tmp_path, device="cpu", **extra):
    cfg = preset("tiny")
    cls = load_stage(name)
    base = {"autoencoder": str(runs / "ae"), "teacher": str(runs / "teacher"),
            "memory_model": str(runs / "memory_model"), "scene_dropout": 0.1, "critic_steps": 1000}
    opts = TrainOptions(out=Path(tmp_path), batch_size=2, lr=3e-3, extra={**base, **extra})
    torch.manual_seed(0)
    info = CPU if device == "cpu" else DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device(device))
    stage = cls(cfg, opts, info)
    stage.build()
    return stage


def fixed_batch(stage):
    cfg = stage.config.autoencoder
    data = SyntheticClips(stage.clip_frames, cfg.frame_height, cfg.frame_width, num_clips=4, seed=3)
    items = [next(iter(data)) for _ in range(1)] + [data.clip(1)]
    return {k: torch.stack([torch.as_tensor(i[k]) for i in items]) for k in items[0]}


def loss_after(stage, batch, key, steps):
    values = []
    for step in range(1, steps + 1):  # step 0 would also update a DMD generator
        torch.manual_seed(1234)  # the same noise each step: only the weights change
        values.append(float(stage.train_step(batch, step)[key]))
    return values


@pytest.mark.parametrize("name,key", [
    ("teacher", "loss"),
    ("ode-init", "loss"),
    ("direct-forcing", "loss"),
    ("memory", "loss"),
    ("dmd", "fake_loss"),
    ("generator", "fake_loss"),
    ("memorypack", "loss"),
])
def test_stage_lowers_its_loss_on_a_fixed_batch(name, key, runs, tmp_path):
    # ode-init starts from other weights than the teacher's, else it starts at the optimum;
    # memorypack starts from a 4-step generator run
    init = {"init": str(runs / "other")} if name in ("ode-init", "memorypack") else {}
    stage = make_stage(name, runs, tmp_path, **init)
    values = loss_after(stage, fixed_batch(stage), key, steps=6)
    assert all(torch.isfinite(torch.tensor(values)))
    assert values[-1] < values[0], f"{name}: {key} went {values}"


@pytest.mark.parametrize("name", ["dmd", "generator"])
def test_dmd_generator_step_moves_the_rollout_toward_the_target(name, runs, tmp_path):
    """The DMD surrogate 0.5*|x - sg(x - grad)|^2 has gradient grad; after one generator step the
    same rollout (same noise) must sit closer to where the step aimed."""
    stage = make_stage(name, runs, tmp_path)
    batch = fixed_batch(stage)
    with torch.no_grad():  # make the fake score differ from the teacher, else DMD has no signal
        for p in stage.fake.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x0 = stage.encode(batch)
    actions = batch["actions"].float()
    scene = stage.scenes(batch, p_drop=0.0)

    def rollout():
        torch.manual_seed(99)
        return stage.rollout(x0, actions, scene, 0, grad=False)

    before = rollout()
    torch.manual_seed(7)
    metrics = stage.train_step(batch, 0)  # step 0: a generator update
    after = rollout()
    assert float(metrics["dmd_loss"]) > 0
    assert not torch.allclose(before, after), "the generator step changed nothing"


def test_mag_stage1_mask_equals_brute_force():
    for frames, block in [(6, 3), (8, 2), (5, 1), (12, 4)]:
        mask = mag_stage1(frames, block)
        want = torch.zeros(2 * frames, 2 * frames, dtype=torch.bool)
        for q in range(2 * frames):
            for k in range(2 * frames):
                qb, kb = (q % frames) // block, (k % frames) // block
                k_kept = (k % frames) % block == block - 1
                q_clean, k_clean = q < frames, k < frames
                if q_clean and k_clean:
                    want[q, k] = qb == kb or (kb < qb and k_kept)
                elif not q_clean and k_clean:
                    want[q, k] = kb <= qb and k_kept
                elif not q_clean and not k_clean:
                    want[q, k] = qb == kb
        assert torch.equal(mask, want), (frames, block)


def test_history_loss_replaces_later_chunks_with_the_null_condition_at_rate_lambda():
    scene = torch.arange(4000) % 7
    g = torch.Generator().manual_seed(0)
    blocks = history_loss_scenes(scene, n_blocks=6, chunk_blocks=3, prob=0.6, generator=g)
    assert all(torch.equal(b, scene) for b in blocks[:3]), "the first chunk keeps its condition"
    later = torch.stack(blocks[3:])
    assert all(torch.equal(b, later[0]) for b in later), "one decision per chunk"
    dropped = (later[0] == -1).float().mean().item()
    assert abs(dropped - 0.6) < 0.03, dropped
    kept = later[0] != -1
    assert torch.equal(later[0][kept], scene[kept]), "kept samples keep their own scene"
    none = history_loss_scenes(scene, 6, 3, 0.0, generator=g)
    assert all(torch.equal(b, scene) for b in none)


def test_a_trained_memory_model_rebuilds_a_block_from_its_slot_better_than_an_untrained_one(runs, tmp_path):
    from worldmodel.config import preset as get_preset
    from worldmodel.rollout import Rollout, decode_slot_latents

    stage = make_stage("memory", runs, tmp_path, clip_blocks=2, init=str(runs / "teacher"))
    batch = fixed_batch(stage)
    untrained = __import__("copy").deepcopy(stage.network).eval()
    for step in range(300):
        stage.train_step(batch, step)
    trained = stage.network.eval()
    x0 = stage.encode(batch)[:1]  # [1, 6, C, h, w]
    actions = batch["actions"][:1].float()
    cfg = get_preset("tiny")
    cfg.memory.strategy = "mag"

    def rebuild_error(model):
        roll = Rollout(model, cfg.sampler, cfg.memory, memory_model=model)
        for j in (0, 3):
            roll.observe(x0[:, j:j + 3], actions[:, j:j + 3])
        errors = []
        for slot in roll.memory.used_slots():
            end = int(roll.memory.frame[slot]) + 1
            rec = decode_slot_latents(roll, int(slot), torch.Generator().manual_seed(0))
            errors.append(float((rec - x0[:, end - 3:end]).square().mean()))
        return sum(errors) / len(errors)

    before, after = rebuild_error(untrained), rebuild_error(trained)
    assert after < 0.5 * before, (before, after)


# bf16 autocast on CUDA: eager and compiled kernels round differently
DEVICES = [pytest.param("cpu", 1e-3, id="cpu"), pytest.param("cuda", 3e-2, id="cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device,rel", DEVICES)
@pytest.mark.parametrize("name", ["dmd", "generator", "ode-init"])
def test_compiled_distillation_stage_takes_the_eager_steps(name, device, rel, runs, tmp_path):
    """--compile on (dmd/generator: the score models whole, the generator and writer in their
    token paths; ode-init: the teacher and the student whole; what CUDA runs by default) gives
    the eager stage's losses: for dmd/generator a generator update and a critic step."""
    extra = {"critic_steps": 2, **({"history_blocks": 2} if name == "generator" else {})}
    if name == "ode-init":
        extra = {"init": str(runs / "other")}
    eager = make_stage(name, runs, tmp_path / "eager", device, compile="off", **extra)
    compiled = make_stage(name, runs, tmp_path / "compiled", device, compile="on", **extra)
    if name != "ode-init":
        assert compiled.generator.token_paths is not None and eager.generator.token_paths is None
    assert compiled.teacher_net is not compiled.teacher and eager.teacher_net is eager.teacher
    batch = {k: v.to(device) for k, v in fixed_batch(eager).items()}
    for step in (0, 1):  # step 0 moves the generator too
        got = []
        for stage in (eager, compiled):
            torch.manual_seed(50 + step)
            got.append({k: float(v) for k, v in stage.train_step(batch, step).items()})
        assert got[0].keys() == got[1].keys()
        for key in got[0]:
            assert got[1][key] == pytest.approx(got[0][key], rel=rel, abs=1e-5), (step, key)


@pytest.mark.gpu
@pytest.mark.parametrize("name,step", [("teacher", 1), ("ode-init", 1), ("memory", 1), ("dmd", 1), ("dmd", 0),
                                       ("generator", 1), ("generator", 0)])
def test_a_training_step_on_cuda_never_waits_for_the_gpu(name, step, runs, tmp_path):
    """CUDA's sync debug mode makes every host-device synchronisation an error: a step (from the
    latent cache, as on the GPU) must queue all its work without once waiting for it, else the
    GPU idles while the host catches up (session 12: a Self Forcing step of tiny passes spent
    most of its time so). dmd/generator step 0 is a generator update, step 1 a critic step."""
    extra = {"critic_steps": 2, **({"history_blocks": 2} if name == "generator" else {})}
    stage = make_stage(name, runs, tmp_path, "cuda", compile="off", **extra)
    batch = {k: v.to("cuda") for k, v in fixed_batch(stage).items()}
    batch["latents"] = stage.encode(batch)
    stage.train_step(batch, step)  # first use: cuBLAS handles, the allocator's pools
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metrics = stage.train_step(batch, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.gpu
def test_a_host_batch_reaches_cuda_intact_through_pinned_memory():
    """trainer.to_device copies without waiting (pinned, non-blocking); the values arrive whole."""
    from worldmodel.train.trainer import to_device

    batch = {"frames": torch.randint(0, 255, (4, 6, 8, 8, 3), dtype=torch.uint8), "scene": torch.arange(4)}
    got = to_device(batch, torch.device("cuda"))
    torch.cuda.synchronize()
    assert all(got[k].is_cuda and torch.equal(got[k].cpu(), batch[k]) for k in batch)
