"""Tiny training runs (autoencoder and teacher stages) for the trainer tests."""

from pathlib import Path

import torch

from worldmodel.autoencoder import Autoencoder
from worldmodel.config import preset
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.distributed import DistInfo
from worldmodel.train.latent_stage import paired_velocity
from worldmodel.train.stage import TrainOptions
from worldmodel.train.stage_autoencoder import AutoencoderStage
from worldmodel.train.stage_teacher import TeacherStage
from worldmodel.train.synthetic import SyntheticClips
from worldmodel.train.trainer import Trainer


def options(out, **kw):
    base = dict(out=Path(out), max_steps=3, batch_size=4, lr=1e-3, warmup_steps=2, log_every=1,
                checkpoint_every_min=0, extra={"stats_frames": 6})
    base.update(kw)
    return TrainOptions(**base)


class SGDAutoencoderStage(AutoencoderStage):
    """The autoencoder stage with plain SGD: updates linear in the gradient, for comparing gradients.

    (Adam turns float round-off in gradients that are ~0 by symmetry, e.g. a conv bias right before
    a GroupNorm, into updates of size ~lr, so Adam runs agree only to ~lr/10 across reduction orders.)
    """

    def build(self):
        super().build()
        self.optimizer = torch.optim.SGD(self.autoencoder.parameters(), lr=self.lr)


class ClipNoiseTeacherStage(TeacherStage):
    """The teacher stage with its randomness tied to each clip instead of to the rank's stream.

    Noise and noise levels are drawn from a generator seeded by the clip's pixels and the step,
    the RoPE offset is 0 and the scene is always given: a clip gets the same noise whichever rank
    trains it, so one process and several take the same step on the same global batch. The DiT
    starts from random weights (its zero init would leave most gradients zero and a comparison
    of weights proving little). extra["sgd"]: SGD with momentum, linear in the gradient, instead of
    AdamW (see SGDAutoencoderStage for why).
    """

    def new_dit(self, init=None, names=()):
        model = super().new_dit(init, names)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        return model

    def build_models(self):
        super().build_models()
        if self.options.extra.get("sgd"):
            self.optimizer = torch.optim.SGD(self.network.parameters(), lr=self.lr, momentum=0.9)

    def train_step(self, batch, step):
        x0 = self.encode(batch)
        b, f = x0.shape[:2]
        noise, sigma = [], []
        for clip in batch["frames"]:
            g = torch.Generator().manual_seed(int(clip.long().sum()) * 1000 + step)
            noise.append(torch.randn(x0.shape[1:], generator=g))
            sigma.append(torch.rand(f, generator=g).clamp(1e-3, 1.0))
        noise, sigma = torch.stack(noise).to(self.device), torch.stack(sigma).to(self.device)
        s = sigma[..., None, None, None]
        x_t = (1 - s) * x0 + s * noise
        pos = torch.arange(f, device=self.device).repeat(2)
        v = paired_velocity(self.net, x0, x_t, sigma, batch["actions"].float(), pos, self.mask,
                            batch["scene"].long(), self.autocast)
        loss = (v - (noise - x0)).square().mean()
        return {"loss": loss.detach(), "grad_norm": self.optimize(loss, "teacher")}


def save_tiny_autoencoder(directory) -> Path:
    """A random tiny autoencoder saved as a run (what `--autoencoder` of the latent stages reads)."""
    cfg = preset("tiny")
    torch.manual_seed(0)
    d = Path(directory) / "checkpoint"
    d.mkdir(parents=True)
    ckpt.save_config(d, cfg)
    ckpt.save_weights(d, "autoencoder", Autoencoder(cfg.autoencoder).state_dict())
    return Path(directory)


def make_trainer(opts, info: DistInfo, trainer_cls=Trainer, stage_cls=AutoencoderStage):
    cfg = preset("tiny")
    a = cfg.autoencoder

    def make_dataset(clip_frames, seed):
        return SyntheticClips(clip_frames, a.frame_height, a.frame_width, num_clips=16, seed=seed,
                              rank=info.rank, world_size=info.world_size)

    return trainer_cls(stage_cls(cfg, opts, info), make_dataset, opts, info, progress=False)


def snapshotting_trainer(at_step: int, dest):
    """A Trainer that also copies its checkpoint to `dest` when it saves at step `at_step` (to
    resume from that exact point later, beside the uninterrupted run)."""
    import shutil

    class Snapshotting(Trainer):
        def save(self, final):
            super().save(final)
            if self.step == at_step:
                shutil.copytree(self.checkpoint_dir, dest)

    return Snapshotting


def run_straight_and_resumed(trainer, tmp_path, at_step: int = 2):
    """(straight, resumed): trainer(out, cls, **options) run once uninterrupted (into tmp_path/a),
    and once resumed (into tmp_path/b) from the checkpoint the first saved at `at_step`."""
    import shutil

    snap = tmp_path / f"at{at_step}"
    straight = trainer(tmp_path / "a", snapshotting_trainer(at_step, snap), checkpoint_every_steps=at_step)
    straight.run()
    (tmp_path / "b").mkdir()
    shutil.copytree(snap, tmp_path / "b" / "checkpoint")
    resumed = trainer(tmp_path / "b", Trainer, resume=True)
    resumed.run()
    return straight, resumed


def save_tiny_runs(root) -> Path:
    """A tiny autoencoder, teacher, memory model and another generator ("other", other weights)
    saved as runs under `root`, to initialise the latent stages from."""
    from worldmodel.bundle import WorldModel

    cfg = preset("tiny")
    wm = WorldModel.random(cfg)
    other = WorldModel.random(cfg, seed=1).generator
    for run, name, module in [("ae", "autoencoder", wm.autoencoder), ("teacher", "teacher", wm.generator),
                              ("memory_model", "memory_model", wm.memory_model), ("other", "generator", other)]:
        d = Path(root) / run / "checkpoint"
        d.mkdir(parents=True)
        ckpt.save_config(d, cfg)
        ckpt.save_weights(d, name, module.state_dict())
    return Path(root)
