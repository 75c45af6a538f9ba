"""The trainer resumes bit for bit, and its time limit, logs and refusals behave."""

import shutil

import pytest
import torch

from train_helpers import make_trainer, options, snapshotting_trainer
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.distributed import DistInfo
from worldmodel.train.metrics_log import read_metrics

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def full_state(trainer):
    stage = trainer.stage
    state = {f"model.{k}": v for k, v in stage.autoencoder.state_dict().items()}
    state.update({f"ema.{k}": v for k, v in stage.ema.shadow.items()})
    for i, s in stage.optimizer.state_dict()["state"].items():
        state.update({f"opt.{i}.{k}": v for k, v in s.items()})
    return state


def test_resume_continues_bit_for_bit(tmp_path):
    snapshot = tmp_path / "at_step_2"

    straight = make_trainer(options(tmp_path / "a", checkpoint_every_steps=2), CPU, snapshotting_trainer(2, snapshot))
    straight.run()  # steps 1, 2, checkpoint, step 3
    assert straight.step == 3 and snapshot.is_dir()

    (tmp_path / "b").mkdir()
    shutil.copytree(snapshot, tmp_path / "b" / "checkpoint")
    resumed = make_trainer(options(tmp_path / "b", resume=True), CPU)
    resumed.run()  # loads step 2, runs step 3
    assert resumed.step == 3

    a, b = full_state(straight), full_state(resumed)
    assert set(a) == set(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different[:5]}"
    # The step-3 metrics agree exactly too (same data, same noise).
    assert read_metrics(tmp_path / "a")["loss"][-1] == read_metrics(tmp_path / "b")["loss"][-1]


def test_a_fresh_run_refuses_to_overwrite_a_checkpoint(tmp_path):
    make_trainer(options(tmp_path, max_steps=1), CPU).run()
    with pytest.raises(FileExistsError, match="--resume"):
        make_trainer(options(tmp_path, max_steps=2), CPU).run()


def test_resuming_with_another_config_names_the_field(tmp_path):
    make_trainer(options(tmp_path, max_steps=1), CPU).run()
    trainer = make_trainer(options(tmp_path, max_steps=2, resume=True), CPU)
    trainer.stage.config.autoencoder.base_channels = 16
    trainer.config = trainer.stage.config
    with pytest.raises(ckpt.CheckpointError, match="autoencoder.base_channels"):
        trainer.run()


def test_time_limit_stops_early_with_a_loadable_checkpoint(tmp_path):
    # A limit too short for even one step: the run must stop at once yet still checkpoint.
    result = make_trainer(options(tmp_path, max_steps=1000, time_limit_min=0.01), CPU).run()
    assert result.reason == "time_limit" and result.step < 1000
    found = ckpt.resolve_checkpoint(tmp_path)
    shared, _ = ckpt.load_training_state(found, 0)
    assert shared["step"] == result.step


def test_checkpoint_ships_ema_weights_with_measured_latent_statistics(tmp_path):
    from worldmodel.autoencoder import load_autoencoder

    trainer = make_trainer(options(tmp_path, max_steps=2), CPU)
    trainer.run()
    ae = load_autoencoder(tmp_path)
    assert not torch.equal(ae.latent_scale, torch.ones_like(ae.latent_scale))
    shipped = ae.state_dict()["decoder.conv_out.weight"]
    ema = trainer.stage.ema.shadow["decoder.conv_out.weight"]
    assert torch.equal(shipped, ema)
    # Normalised latents of training-like data have roughly unit variance per channel.
    frames = next(iter(trainer.make_dataset(3, 123)))["frames"]
    z = ae.encode(frames.permute(0, 3, 1, 2))
    assert z.std().item() == pytest.approx(1.0, rel=0.5)


def test_metrics_csv_has_one_row_per_logged_step_after_resume(tmp_path):
    make_trainer(options(tmp_path, max_steps=2), CPU).run()
    make_trainer(options(tmp_path, max_steps=4, resume=True), CPU).run()
    steps = [s for s, _ in read_metrics(tmp_path)["loss"]]
    assert steps == [1, 2, 3, 4]


def test_a_slow_first_step_does_not_set_the_pace_of_the_time_limit(tmp_path):
    # torch.compile makes the first step of a GPU run take a minute and the rest milliseconds:
    # once later steps are timed, the reserve follows them (a 3.6-minute run once stopped at step 1).
    trainer = make_trainer(options(tmp_path, max_steps=10, time_limit_min=3.6), CPU)
    trainer._step_seconds = [70.0]
    assert trainer._step_reserve_seconds() == pytest.approx(70.0)  # one more like it, not two
    trainer._step_seconds = [70.0, 0.04, 0.05]
    assert trainer._step_reserve_seconds() == pytest.approx(0.10)
    trainer.start_time -= 60.0  # a minute in, with fast steps: far from the limit
    assert trainer._time_left_for_another_step()
