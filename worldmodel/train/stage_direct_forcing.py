"""Stage `direct-forcing`: the cheap alternative to distillation (MemoryPack paper, seed 2).

Flow matching on pairs of consecutive clips of one video. The first clip is trained as usual
(clean history = ground truth); the second is conditioned on the one-step estimate
x̃ = x_t - s·v(x_t) of the first clip instead of its ground truth, so training sees the kind of
history inference produces. Gradients of both clips accumulate into one optimiser step.
"""

from __future__ import annotations

import torch

from worldmodel.model.masks import teacher_forcing
from worldmodel.train.latent_stage import LatentStage, paired_velocity
from worldmodel.train.stage_teacher import flow_matching_loss


class DirectForcingStage(LatentStage):
    """generator by Direct Forcing: condition each clip on the one-step estimate of the previous"""

    name = "direct-forcing"
    default_lr = 1e-4
    default_clip_blocks = 4  # two clips of 2 blocks

    def build_models(self) -> None:
        if self.clip_blocks % 2:
            raise ValueError(f"--clip-blocks must be even (two clips per video), got {self.clip_blocks}")
        self.train_network("generator", self.new_dit(self.options.extra.get("init"), ("generator", "teacher")))
        self.half = self.clip_frames // 2
        self.mask_half = teacher_forcing(self.half, self.block, self.device)
        self.mask_pair = teacher_forcing(self.clip_frames, self.block, self.device)


    def train_step(self, batch, step):
        x0 = self.encode(batch)
        b, f = x0.shape[:2]
        h = self.half
        actions = batch["actions"].float()
        scene = self.scenes(batch)
        pos = self.positions(f, 1)
        # clip A: ground-truth history inside the clip
        sig_a = self.sigmas_per_frame(b, h)
        loss_a, v_a, xt_a = flow_matching_loss(self.net, x0[:, :h], actions[:, :h], scene, sig_a,
                                               pos[:h].repeat(2), self.mask_half, self.autocast)
        x_tilde = (xt_a - sig_a[..., None, None, None] * v_a).detach()
        # clip B: history is A's one-step estimate; B's own blocks keep their ground truth history
        sig_b = torch.cat([torch.zeros(b, h, device=self.device), self.sigmas_per_frame(b, h)], 1)
        history = torch.cat([x_tilde, x0[:, h:]], 1)
        noise = torch.randn_like(x0)
        s = sig_b[..., None, None, None]
        x_t = (1 - s) * x0 + s * noise
        v = paired_velocity(self.net, history, x_t, sig_b, actions, pos.repeat(2), self.mask_pair, scene,
                            self.autocast)[:, h:]
        loss_b = (v - (noise - x0)[:, h:]).square().mean()
        loss = 0.5 * (loss_a + loss_b)
        grad_norm = self.optimize(loss, "generator")
        return {"loss": loss.detach(), "loss_first": loss_a.detach(), "loss_second": loss_b.detach(),
                "grad_norm": grad_norm}
