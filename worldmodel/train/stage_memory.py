"""Stage `memory`: MAG stage 1 — the memory model, an autoencoder in KV space.

One forward over [clean clip ; noisy clip] under the MAG mask (worldmodel/model/masks.py:
mag_stage1): the clean pass of block j may keep only its last frame for later blocks, and the
noisy copy of block j must be reconstructed from noise seeing only the kept clean frames of
blocks <= j. Loss: MSE of the predicted clean latents of the noisy copy. Noise levels come from
the 4-step list; the RoPE start is randomised in whole blocks; the condition is empty.
"""

from __future__ import annotations

import torch

from worldmodel.diffusion.flow_matching import step_sigmas
from worldmodel.model.masks import mag_stage1
from worldmodel.train.latent_stage import LatentStage, paired_velocity


class MemoryStage(LatentStage):
    """MAG memory model: compress each block's KV cache to its last frame"""

    name = "memory"
    default_lr = 1e-4

    def build_models(self) -> None:
        extra = self.options.extra
        self.train_network("memory_model", self.new_dit(extra.get("init"), ("memory_model", "generator", "teacher")))
        self.mask = mag_stage1(self.clip_frames, self.block, self.device)
        self.levels = torch.as_tensor(step_sigmas(self.config.sampler), device=self.device)


    def train_step(self, batch, step):
        x0 = self.encode(batch)
        b, f = x0.shape[:2]
        k = torch.randint(0, len(self.levels), (b, f // self.block), device=self.device)
        s = self.levels[k].repeat_interleave(self.block, 1)  # one level per block
        noise = torch.randn_like(x0)
        x_t = (1 - s[..., None, None, None]) * x0 + s[..., None, None, None] * noise
        actions = batch["actions"].float()
        empty = torch.full((b,), -1, dtype=torch.long, device=self.device)
        v = paired_velocity(self.net, x0, x_t, s, actions, self.positions(f, 2), self.mask, empty, self.autocast)
        pred = x_t - s[..., None, None, None] * v
        loss = (pred - x0).square().mean()
        psnr_latent = -10 * torch.log10(loss.detach().clamp_min(1e-12))
        grad_norm = self.optimize(loss, "memory_model")
        return {"loss": loss.detach(), "latent_psnr": psnr_latent, "grad_norm": grad_norm}
