"""Stage `teacher`: the multi-step flow-matching world model that the few-step generator learns from.

Each clip is laid out as [clean frames ; noisy frames] under the teacher-forcing mask: a noisy
block sees the clean blocks before it and itself, as a block being denoised sees the KV cache at
inference. Noise levels are independent per frame or per block (diffusion forcing), so the
teacher can continue any clip from history; they are drawn logit-normal by default. Part of the
clips get noised history with its level given to the model (context noise augmentation), so
that a rollout over the model's own imperfect frames does not drift. Loss: MSE of the flow
velocity on the noisy frames.
"""

from __future__ import annotations

import torch

from worldmodel.model.masks import teacher_forcing
from worldmodel.train.latent_stage import LatentStage, paired_velocity


def flow_matching_loss(net, x0, actions, scene, sigma, pos, mask, autocast, history=None, history_sigma=None):
    """Velocity MSE on the noisy half of [history ; noisy(x0)] (history defaults to x0 itself).

    x0 [b, F, C, h, w], actions [b, F, A], scene [b], sigma [b, F], pos [2F], mask [2F, 2F].
    history_sigma [b, F] or None: noise the history to these levels first (and say so to the model).
    Returns (loss, v_pred [b, F, ...], x_t)."""
    history = x0 if history is None else history
    if history_sigma is not None:
        c = history_sigma[..., None, None, None]
        history = (1 - c) * history + c * torch.randn_like(history)
    noise = torch.randn_like(x0)
    s = sigma[..., None, None, None]
    x_t = (1 - s) * x0 + s * noise
    v = paired_velocity(net, history, x_t, sigma, actions, pos, mask, scene, autocast, history_sigma)
    loss = (v - (noise - x0)).square().mean()
    return loss, v, x_t


class TeacherStage(LatentStage):
    """the multi-step flow-matching teacher (diffusion forcing, teacher-forcing mask)"""

    name = "teacher"
    default_lr = 3e-4

    @classmethod
    def add_arguments(cls, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--sigma-sampling", choices=("logit-normal", "uniform"), default="logit-normal",
                            help="how training noise levels are drawn before the shift (default logit-normal)")
        parser.add_argument("--train-shift", type=float, default=3.0,
                            help="timestep shift of the training noise levels (default 3; the sampler's is its own)")
        parser.add_argument("--context-noise", type=float, default=0.3, metavar="LEVEL",
                            help="noise the history frames up to this flow level, telling the model the level "
                                 "(0 turns it off; default 0.3)")
        parser.add_argument("--context-noise-prob", type=float, default=0.5,
                            help="share of the clips whose history is noised (default 0.5)")

    def build_models(self) -> None:
        self.train_network("teacher", self.new_dit(self.options.extra.get("init"), ("teacher",)))
        self.mask = teacher_forcing(self.clip_frames, self.block, self.device)


    def train_step(self, batch, step):
        extra = self.options.extra
        x0 = self.encode(batch)
        b, f = x0.shape[:2]
        sigma = self.sigmas_per_frame(b, f, extra.get("sigma_sampling") or "uniform",
                                      extra.get("train_shift"))
        history_sigma = self.context_sigmas(b, f, float(extra.get("context_noise") or 0.0),
                                            float(extra.get("context_noise_prob") or 0.0))
        loss, _, _ = flow_matching_loss(self.net, x0, batch["actions"].float(), self.scenes(batch), sigma,
                                        self.positions(f, 2), self.mask, self.autocast, history_sigma=history_sigma)
        grad_norm = self.optimize(loss, "teacher")
        return {"loss": loss.detach(), "grad_norm": grad_norm}

    def validation_step(self, batch):
        """The training loss of the EMA weights on held-out clips, with clean history (what the
        next-block evaluation conditions on) and the scene condition kept."""
        extra = self.options.extra
        x0 = self.encode(batch)
        b, f = x0.shape[:2]
        sigma = self.sigmas_per_frame(b, f, extra.get("sigma_sampling") or "uniform", extra.get("train_shift"))
        loss, _, _ = flow_matching_loss(self.ema_network(), x0, batch["actions"].float(), self.scenes(batch, 0.0),
                                        sigma, self.positions(f, 2), self.mask, self.autocast)
        return {"loss": loss}
