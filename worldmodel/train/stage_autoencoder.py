"""Stage `autoencoder`: train the frame VAE, then measure its latent statistics.

Loss on frames in [-1, 1]: L1 + l2_weight * MSE + edge_weight * L1 of image gradients (keeps thin
Doom edges and text sharp without a perceptual network, which is not available offline)
+ autoencoder.kl_weight * KL. Before every checkpoint the per-channel mean and std of the
posterior mean are measured on data with the EMA weights and stored as `latent_shift` /
`latent_scale`, so the shipped autoencoder's `encode` gives ~unit-variance latents.
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
from torch import nn

from worldmodel.autoencoder import Autoencoder, channels_first, frames_to_float
from worldmodel.train.distributed import world_size
from worldmodel.train.ema import EMA
from worldmodel.train.stage import Stage
from worldmodel.train.trainer import Batches

STATS_SEED_OFFSET = 7919  # the statistics draw clips in another order than training does


def edge_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical finite differences of [N, 3, H, W] images."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


class AutoencoderStage(Stage):
    """Train the frame autoencoder (VAE) and measure its latent statistics."""

    name = "autoencoder"
    clip_frames = 3  # frames are treated independently; short clips keep batches varied
    default_lr = 2e-4
    default_batch_size = 16  # clips, i.e. 48 frames

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--l2-weight", type=float, default=1.0, help="weight of the MSE term (default 1)")
        parser.add_argument("--edge-weight", type=float, default=0.5, help="weight of the image-gradient L1 term (default 0.5)")
        parser.add_argument("--stats-frames", type=int, default=512,
                            help="frames (per process) used to measure latent mean/std at each checkpoint (default 512)")
        parser.add_argument("--deterministic", action="store_true",
                            help="use the posterior mean instead of a sample (a plain autoencoder)")

    def build(self) -> None:
        extra = self.options.extra
        self.l2_weight = float(extra.get("l2_weight", 1.0))
        self.edge_weight = float(extra.get("edge_weight", 0.5))
        self.stats_frames = int(extra.get("stats_frames", 512))
        self.sample = not extra.get("deterministic", False)
        frames_per_batch = self.local_batch_size * self.clip_frames
        # Encoding costs about a third of a training step per batch.
        self.final_save_cost_steps = math.ceil(self.stats_frames / frames_per_batch) / 3

        self.autoencoder = Autoencoder(self.config.autoencoder).to(self.device)
        self.net = self.ddp(self.autoencoder)
        self.optimizer = torch.optim.AdamW(
            self.autoencoder.parameters(), lr=self.lr, betas=(0.9, 0.99), weight_decay=self.options.weight_decay
        )
        self.ema = EMA(self.autoencoder, decay=self.options.ema_decay)

    def models(self) -> dict[str, nn.Module]:
        return {"autoencoder": self.autoencoder}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"autoencoder": self.optimizer}

    def emas(self) -> dict[str, EMA]:
        return {"autoencoder": self.ema}

    def _frames(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """frames uint8 [b, L, H, W, 3] -> float [b*L, 3, H, W] in [-1, 1], checked against the config."""
        frames = batch["frames"]
        cfg = self.config.autoencoder
        if tuple(frames.shape[-3:-1]) != (cfg.frame_height, cfg.frame_width):
            raise ValueError(
                f"data frames are {frames.shape[-3]}x{frames.shape[-2]} (HxW) but the autoencoder is configured for "
                f"{cfg.frame_height}x{cfg.frame_width}; pass --set autoencoder.frame_height={frames.shape[-3]} "
                f"--set autoencoder.frame_width={frames.shape[-2]} or choose the matching --preset"
            )
        return frames_to_float(channels_first(frames.flatten(0, 1)))

    def train_step(self, batch, step):
        x = self._frames(batch)
        with self.autocast():
            out = self.net(x, sample=self.sample)
        rec = out.reconstruction.float()
        l1 = (rec - x).abs().mean()
        l2 = (rec - x).square().mean()
        edge = edge_loss(rec, x)
        loss = l1 + self.l2_weight * l2 + self.edge_weight * edge + self.config.autoencoder.kl_weight * out.kl
        grad_norm = self.optimize(loss, "autoencoder")
        psnr = 10 * torch.log10(4.0 / l2.detach().clamp_min(1e-12))  # peak-to-peak 2 on [-1, 1]
        return {"loss": loss.detach(), "l1": l1.detach(), "l2": l2.detach(), "edge": edge.detach(),
                "kl": out.kl.detach(), "psnr": psnr, "grad_norm": grad_norm}

    @torch.no_grad()
    def latent_statistics(self, model: Autoencoder) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (mean, std) [C] of the unnormalised posterior mean over `stats_frames` frames per rank."""
        if self.make_dataset is None:
            raise RuntimeError("latent statistics need data: the trainer sets make_dataset on the stage")
        dataset = self.make_dataset(self.clip_frames, self.options.seed + STATS_SEED_OFFSET)
        batches = Batches(dataset, self.local_batch_size)
        c = self.config.autoencoder.latent_channels
        acc = torch.zeros(3, c, dtype=torch.float64, device=self.device)  # count, sum, sum of squares
        seen = 0
        while seen < self.stats_frames:
            x = self._frames({"frames": next(batches)["frames"].to(self.device)})
            with self.autocast():
                mean, _ = model.posterior(x)
            m = mean.double().transpose(0, 1).reshape(c, -1)
            acc[0] += m.shape[1]
            acc[1] += m.sum(1)
            acc[2] += m.square().sum(1)
            seen += x.shape[0]
        if world_size() > 1:
            torch.distributed.all_reduce(acc)
        mu = acc[1] / acc[0]
        var = (acc[2] / acc[0] - mu.square()).clamp_min(0)
        return mu.float(), var.sqrt().clamp_min(1e-6).float()

    def before_save(self, final: bool) -> None:
        shipped = copy.deepcopy(self.autoencoder)
        self.ema.copy_to(shipped)
        shipped.eval()
        mu, std = self.latent_statistics(shipped)
        self.autoencoder.latent_shift.copy_(mu)
        self.autoencoder.latent_scale.copy_(std)
        self.ema.buffers["latent_shift"].copy_(mu)
        self.ema.buffers["latent_scale"].copy_(std)
