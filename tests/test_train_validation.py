"""Held-out validation during training (--val-data): logged every --val-every steps, the same for
the same weights, without changing the training or its exact resume; a stage without a
validation loss refuses it."""

import csv

import pytest
import torch

from train_helpers import options, run_straight_and_resumed, save_tiny_autoencoder
from worldmodel.cli import main
from worldmodel.config import preset
from worldmodel.train.distributed import DistInfo
from worldmodel.train.stage_autoencoder import AutoencoderStage
from worldmodel.train.stage_teacher import TeacherStage
from worldmodel.train.synthetic import SyntheticClips
from worldmodel.train.trainer import Trainer

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
CFG = preset("tiny")
A = CFG.autoencoder


def clips(num_clips, offset=0):
    """Synthetic clips; `offset` shifts the seed, so a validation set differs from the training set."""
    return lambda clip_frames, seed: SyntheticClips(clip_frames, A.frame_height, A.frame_width, num_clips=num_clips,
                                                    seed=seed + offset, num_scenes=CFG.model.num_scenes)


@pytest.fixture
def ae(tmp_path):
    return save_tiny_autoencoder(tmp_path / "ae")


def teacher(ae, validate=True, **kw):
    def make(out, cls=Trainer, **more):
        opts = options(out, max_steps=4, val_every=2, val_clips=6,
                       extra={"autoencoder": str(ae), "clip_blocks": 2, "sigma_sampling": "logit-normal",
                              "train_shift": 3.0, "context_noise": 0.3, "context_noise_prob": 0.5}, **kw, **more)
        return cls(TeacherStage(CFG, opts, CPU), clips(16), opts, CPU, progress=False,
                   make_val_dataset=clips(8, offset=100) if validate else None)
    return make


def rows(out):
    with (out / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_val_loss_is_logged_every_val_every_steps_and_leaves_training_unchanged(ae, tmp_path):
    with_val = teacher(ae)(tmp_path / "v")
    with_val.run()
    without = teacher(ae, validate=False)(tmp_path / "n")
    without.run()
    logged = {int(r["step"]): r["val_loss"] for r in rows(tmp_path / "v")}
    assert [s for s, v in logged.items() if v] == [2, 4]
    assert all(0 < float(logged[s]) < 100 for s in (2, 4))
    assert "val_loss" not in rows(tmp_path / "n")[0]
    # validation draws from no training stream: the same losses and weights as without it
    assert [r["loss"] for r in rows(tmp_path / "v")] == [r["loss"] for r in rows(tmp_path / "n")]
    a, b = with_val.stage.network.state_dict(), without.stage.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # 6 clips in batches of 4: two whole batches kept, scored at fixed noise
    assert len(with_val.validation.batches) == 2
    first, again = with_val.validation(with_val.stage)["val_loss"], with_val.validation(with_val.stage)["val_loss"]
    assert torch.equal(first, again)


def test_validation_scores_the_ema_weights(ae, tmp_path):
    run = teacher(ae)(tmp_path / "v")
    run.run()
    before = run.validation(run.stage)["val_loss"]
    with torch.no_grad():
        for v in run.stage.ema.shadow.values():
            v.add_(0.5 * torch.randn_like(v))
    assert not torch.equal(run.validation(run.stage)["val_loss"], before)


def test_a_run_with_validation_resumes_bit_for_bit(ae, tmp_path):
    straight, resumed = run_straight_and_resumed(teacher(ae), tmp_path)
    a, b = straight.stage.network.state_dict(), resumed.stage.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rows(tmp_path / "a")[-1]["val_loss"] == rows(tmp_path / "b")[-1]["val_loss"] != ""


def test_a_stage_without_a_validation_loss_refuses_val_data(tmp_path):
    opts = options(tmp_path / "x")
    with pytest.raises(ValueError, match="has no validation loss: leave out --val-data"):
        Trainer(AutoencoderStage(CFG, opts, CPU), clips(8), opts, CPU, progress=False, make_val_dataset=clips(8))


def test_train_teacher_val_data_on_the_command_line(ae, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "teacher", "--preset", "tiny", "--data", "synthetic", "--val-data", "synthetic",
                 "--val-split", "train", "--val-every", "2", "--val-clips", "4", "--autoencoder", str(ae),
                 "--out", str(out), "--max-steps", "2", "--log-every", "1", "--batch-size", "2", "--device", "cpu",
                 "--no-progress"]) == 0
    assert rows(out)[-1]["val_loss"] != ""
