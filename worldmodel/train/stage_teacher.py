"""Stage `teacher`: the multi-step flow-matching world model that the few-step generator learns from.

Each clip is laid out as [clean frames ; noisy frames] under the teacher-forcing mask: a noisy
block sees the clean blocks before it and itself, as a block being denoised sees the KV cache at
inference. Noise levels are independent per frame or per block (diffusion forcing), so the
teacher can continue any clip from history. Loss: MSE of the flow velocity on the noisy frames.
"""

from __future__ import annotations

import torch

from worldmodel.model.masks import teacher_forcing
from worldmodel.train.latent_stage import LatentStage, paired_velocity


def flow_matching_loss(net, x0, actions, scene, sigma, pos, mask, autocast, history=None):
    """Velocity MSE on the noisy half of [history ; noisy(x0)] (history defaults to x0 itself).

    x0 [b, F, C, h, w], actions [b, F, A], scene [b], sigma [b, F], pos [2F], mask [2F, 2F].
    Returns (loss, v_pred [b, F, ...], x_t)."""
    history = x0 if history is None else history
    noise = torch.randn_like(x0)
    s = sigma[..., None, None, None]
    x_t = (1 - s) * x0 + s * noise
    v = paired_velocity(net, history, x_t, sigma, actions, pos, mask, scene, autocast)
    loss = (v - (noise - x0)).square().mean()
    return loss, v, x_t


class TeacherStage(LatentStage):
    """the multi-step flow-matching teacher (diffusion forcing, teacher-forcing mask)"""

    name = "teacher"
    default_lr = 3e-4

    def build_models(self) -> None:
        self.train_network("teacher", self.new_dit(self.options.extra.get("init"), ("teacher",)))
        self.mask = teacher_forcing(self.clip_frames, self.block, self.device)


    def train_step(self, batch, step):
        x0 = self.encode(batch)
        b, f = x0.shape[:2]
        sigma = self.sigmas_per_frame(b, f)
        loss, _, _ = flow_matching_loss(self.net, x0, batch["actions"].float(), self.scenes(batch), sigma,
                                        self.positions(f, 2), self.mask, self.autocast)
        grad_norm = self.optimize(loss, "teacher")
        return {"loss": loss.detach(), "grad_norm": grad_norm}
