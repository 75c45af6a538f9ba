"""FSDP (FSDP2, `fully_shard`) on two CPU processes (gloo), tiny teacher stage: the same step as one
process on the same global batch; a checkpoint that one process loads; an exact resume."""

import contextlib
import dataclasses
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.distributed.fsdp import FSDPModule

from test_train_ddp import free_port
from train_helpers import ClipNoiseTeacherStage, make_trainer, options, save_tiny_autoencoder
from worldmodel.config import preset
from worldmodel.diffusion.flow_matching import step_sigmas
from worldmodel.model import CausalDiT
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.distributed import (DistInfo, choose_parallel, init_distributed, is_dtensor, is_sharded, shutdown,
                                          unwrap, wrap_fsdp)
from worldmodel.train.ema import EMA
from worldmodel.train.self_forcing import self_forcing_rollout
from worldmodel.train.trainer import Trainer

STEPS = 2
GLOBAL_BATCH = 4
SINGLE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def teacher_options(out, root, **kw):
    extra = {"autoencoder": str(root / "ae"), "clip_blocks": 2, "scene_dropout": 0.0, **kw.pop("extra", {})}
    return options(out, max_steps=STEPS, batch_size=GLOBAL_BATCH, lr=1e-2, parallel="fsdp", extra=extra, **kw)


class Snapshotting(Trainer):
    """Keeps a copy of the checkpoint written at step 1."""

    def save(self, final):
        super().save(final)
        if self.step == 1 and self.dist.is_main:
            shutil.copytree(self.checkpoint_dir, self.out.parent / "at_step_1")


def _train(root: Path, info: DistInfo):
    trainer = make_trainer(teacher_options(root / "fsdp", root, extra={"sgd": True}), info,
                           stage_cls=ClipNoiseTeacherStage)
    trainer.run()
    stage = trainer.stage
    assert is_sharded(stage.network) and unwrap(stage.net) is stage.network
    assert all(isinstance(block, FSDPModule) for block in stage.network.blocks), "each block is its own FSDP unit"
    assert all(is_dtensor(v) for v in stage.ema.shadow.values()), "the EMA should be sharded like the model"


def _straight_then_resumed(root: Path, info: DistInfo):
    opts = teacher_options(root / "straight", root, checkpoint_every_steps=1)
    make_trainer(opts, info, Snapshotting, ClipNoiseTeacherStage).run()  # steps 1, checkpoint, 2
    if info.is_main:
        shutil.copytree(root / "at_step_1", root / "resumed" / "checkpoint")
    torch.distributed.barrier()
    resumed = make_trainer(teacher_options(root / "resumed", root, resume=True), info, stage_cls=ClipNoiseTeacherStage)
    resumed.run()  # loads step 1, runs step 2
    assert resumed.step == STEPS


def _self_forcing_rollout(root: Path, info: DistInfo):
    cfg = preset("tiny")
    torch.manual_seed(0)
    generator = wrap_fsdp(CausalDiT(cfg.model), info)
    torch.manual_seed(info.rank)  # per-rank streams, as in training: the exit steps drawn differ
    m, blocks = cfg.model, 3
    context = torch.randn(2, m.block_frames, m.latent_channels, m.latent_height, m.latent_width)
    actions = torch.randn(2, (blocks + 1) * m.block_frames, m.action_dim)
    scenes = [torch.zeros(2, dtype=torch.long)] * blocks
    memory = dataclasses.replace(cfg.memory, strategy="full")
    out = self_forcing_rollout(generator, generator, memory, m, context, actions, scenes, step_sigmas(cfg.sampler), 0,
                               contextlib.nullcontext)
    out.square().mean().backward()
    assert out.shape == (2, blocks * m.block_frames, m.latent_channels, m.latent_height, m.latent_width)


JOBS = {"train": _train, "resume": _straight_then_resumed, "rollout": _self_forcing_rollout}


def _worker(rank: int, world: int, port: int, root: str, job: str):
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # A collective that one rank never joins fails the test in a minute instead of hanging it.
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    info = init_distributed("cpu")
    try:
        JOBS[job](Path(root), info)
        # Both ranks finish their work before either tears the group down: a rank that destroyed
        # it while the other was still inside gloo aborted now and then ("terminate called").
        torch.distributed.barrier()
    finally:
        shutdown()


def run_two_processes(root: Path, job: str) -> None:
    mp.spawn(_worker, args=(2, free_port(), str(root), job), nprocs=2, join=True)


def training_state(run: Path) -> dict:
    shared, _ = ckpt.load_training_state(ckpt.resolve_checkpoint(run), 0)
    return shared


@pytest.fixture(scope="module")
def fsdp_and_single(tmp_path_factory):
    """The same 2-step SGD run, by two FSDP processes and by one process."""
    root = tmp_path_factory.mktemp("fsdp")
    save_tiny_autoencoder(root / "ae")
    run_two_processes(root, "train")
    make_trainer(teacher_options(root / "single", root, extra={"sgd": True}), SINGLE,
                 stage_cls=ClipNoiseTeacherStage).run()
    return root


def start_weights(root: Path) -> dict:
    stage = ClipNoiseTeacherStage(preset("tiny"), teacher_options(root / "unused", root), SINGLE)
    stage.build()
    return stage.network.state_dict()


def assert_close(a: dict, b: dict, what: str) -> None:
    assert set(a) == set(b), f"{what}: keys differ"
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), f"{what} {k} differs: max {(a[k] - b[k]).abs().max()}"


def flat(tree, prefix="") -> dict[str, torch.Tensor]:
    """Tensors of a nested state, keyed by their path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}.{key}").items()}
    return {}


def test_two_process_fsdp_step_matches_one_process(fsdp_and_single):
    a, b = training_state(fsdp_and_single / "fsdp"), training_state(fsdp_and_single / "single")
    start = start_weights(fsdp_and_single)
    moved = {k for k in start if not torch.equal(start[k], b["models"]["teacher"][k])}
    # Gradients that are zero by construction: the null prompt (every clip has its scene here) and
    # attention key biases (a bias on every key shifts all scores of a query alike: softmax ignores it).
    idle = {k for k in start if k == "null_prompt" or k.endswith("attn.k.bias")}
    assert set(start) - idle <= moved, f"{sorted(set(start) - idle - moved)} did not move; the comparison would prove little"

    assert_close(a["models"]["teacher"], b["models"]["teacher"], "weight")
    assert_close(a["emas"]["teacher"]["shadow"], b["emas"]["teacher"]["shadow"], "EMA weight")
    momentum = lambda s: {i: v["momentum_buffer"] for i, v in s["optimizers"]["teacher"]["state"].items()}  # noqa: E731
    assert_close(momentum(a), momentum(b), "momentum of parameter")


def test_fsdp_checkpoint_loads_in_one_process(fsdp_and_single):
    directory = ckpt.resolve_checkpoint(fsdp_and_single / "fsdp")
    shared = training_state(fsdp_and_single / "fsdp")
    assert shared["world_size"] == 2
    # The shipped (EMA) weights, as inference loads them ...
    model = ckpt.load_module(CausalDiT(preset("tiny").model), directory, "teacher")
    single = ckpt.load_weights(ckpt.resolve_checkpoint(fsdp_and_single / "single"), "teacher")
    assert_close(model.state_dict(), single, "shipped weight")
    # ... and the training state, into a plain model, optimizer and EMA.
    ckpt.load_into(model, shared["models"]["teacher"], "training weights")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    optimizer.load_state_dict(shared["optimizers"]["teacher"])
    assert len(optimizer.state) == len(list(model.parameters()))
    ema = EMA(model)
    ema.load_state_dict(shared["emas"]["teacher"])
    assert ema.updates == STEPS


def test_resume_under_fsdp_continues_exactly(tmp_path):
    save_tiny_autoencoder(tmp_path / "ae")
    run_two_processes(tmp_path, "resume")  # AdamW: its `step` counter stays whole, its moments sharded
    a, b = training_state(tmp_path / "straight"), training_state(tmp_path / "resumed")
    assert a["step"] == b["step"] == STEPS
    for part in ("models", "emas", "optimizers"):
        different = [k for k, v in flat(a[part]).items() if not torch.equal(v, flat(b[part])[k])]
        assert not different, f"the resumed run's {part} differ from the uninterrupted run's: {different[:5]}"


def test_self_forcing_rollout_runs_under_fsdp_with_per_rank_noise(tmp_path):
    # Every FSDP forward is collective: all ranks must call the generator equally often, so the
    # randomly drawn exit step of each block is rank 0's everywhere (else one rank waits for a
    # collective that never comes, or gloo reports a size mismatch).
    run_two_processes(tmp_path, "rollout")


def test_auto_shards_only_large_networks():
    with torch.device("meta"):
        wan, small = CausalDiT(preset("wan-1.3b").model), CausalDiT(preset("doom-small").model)
    assert choose_parallel(wan, "auto") == "fsdp"
    assert choose_parallel(small, "auto") == "ddp"
    assert choose_parallel(wan, "ddp") == "ddp" and choose_parallel(small, "fsdp") == "fsdp"
    with pytest.raises(ValueError, match="ddp, fsdp"):
        choose_parallel(small, "zero3")


def test_train_command_takes_parallel():
    from worldmodel.cli import build_parser

    common = ["--data", "synthetic", "--out", "x", "--autoencoder", "ae"]
    args = build_parser().parse_args(["train", "teacher", *common, "--parallel", "fsdp"])
    assert args.parallel == "fsdp"
    assert build_parser().parse_args(["train", "teacher", *common]).parallel == "auto"
