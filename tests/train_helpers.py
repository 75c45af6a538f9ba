"""Tiny autoencoder-stage runs for the trainer tests."""

from pathlib import Path

import torch

from worldmodel.config import preset
from worldmodel.train.distributed import DistInfo
from worldmodel.train.stage import TrainOptions
from worldmodel.train.stage_autoencoder import AutoencoderStage
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


def make_trainer(opts, info: DistInfo, trainer_cls=Trainer, stage_cls=AutoencoderStage):
    cfg = preset("tiny")
    a = cfg.autoencoder

    def make_dataset(clip_frames, seed):
        return SyntheticClips(clip_frames, a.frame_height, a.frame_width, num_clips=16, seed=seed,
                              rank=info.rank, world_size=info.world_size)

    return trainer_cls(stage_cls(cfg, opts, info), make_dataset, opts, info, progress=False)
