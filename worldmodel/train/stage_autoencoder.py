"""Stage `autoencoder`: train the frame VAE, then measure its latent statistics.

Loss on frames in [-1, 1]: L1 + l2_weight * MSE + edge_weight * L1 of image gradients (keeps thin
Doom edges and text sharp without a perceptual network, which is not available offline)
+ autoencoder.kl_weight * KL. Before every checkpoint the per-channel mean and std of the
posterior mean are measured on data with the EMA weights and stored as `latent_shift` /
`latent_scale`, so the shipped autoencoder's `encode` gives ~unit-variance latents.

Sharpness (`--adv-weight W > 0`): + W * adaptive weight * the hinge adversarial loss of a
PatchGAN discriminator trained from scratch alongside (discriminator.py), from step
`--adv-start` on; the discriminator itself trains from step 0. It and its optimizer are
checkpointed with the run (resume stays exact) but not shipped: `train package` takes only
`autoencoder`.

Decoder fine-tune (`--init RUN --decoder-only`, GameNGen's recipe): the encoder and the latent
statistics stay exactly those of RUN, so its latents -- and every latent cache and transformer
trained on them -- stay valid; only the decoder learns.
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
from torch import nn

from worldmodel.autoencoder import Autoencoder, channels_first, frames_to_float
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.discriminator import (DiscriminatorConfig, PatchDiscriminator, adaptive_weight,
                                            discriminator_loss, generator_loss)
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
        parser.add_argument("--init", default=None,
                            help="run or checkpoint directory to start the autoencoder from (its autoencoder "
                                 "config replaces the preset's)")
        parser.add_argument("--decoder-only", action="store_true",
                            help="with --init: freeze the encoder and latent statistics, train only the decoder "
                                 "(latents, latent caches and transformers trained on them stay valid)")
        parser.add_argument("--adv-weight", type=float, default=0.0,
                            help="weight of the adversarial (PatchGAN, hinge) loss; 0: no discriminator (default 0)")
        parser.add_argument("--adv-start", type=int, default=0,
                            help="step from which the adversarial term joins the decoder's loss; the discriminator "
                                 "trains from step 0 (default 0)")
        parser.add_argument("--adv-weighting", choices=["adaptive", "fixed"], default="adaptive",
                            help="adaptive: --adv-weight x the ratio of the reconstruction and adversarial gradient "
                                 "norms at the decoder's last layer (VQGAN); fixed: --adv-weight as is (default adaptive)")
        parser.add_argument("--disc-lr", type=float, default=None, help="discriminator learning rate (default: --lr)")
        parser.add_argument("--disc-channels", type=int, default=DiscriminatorConfig.channels,
                            help=f"channels of the discriminator's first layer (default {DiscriminatorConfig.channels})")
        parser.add_argument("--disc-layers", type=int, default=DiscriminatorConfig.layers,
                            help=f"stride-2 layers of the discriminator (default {DiscriminatorConfig.layers})")
        parser.add_argument("--channels-last", action="store_true",
                            help="keep weights and activations channels-last (NHWC), the layout of cuDNN's fastest "
                                 "bf16 convolutions; the same results to rounding (`magworld bench train --stage "
                                 "autoencoder` times both)")
        parser.add_argument("--frames-on-device", choices=("auto", "on", "off"), default="auto",
                            help="hold the split's frames in device memory and gather each batch there, instead of "
                                 "reading every batch from the shards (150,000 frames: 8.6 GB); auto: on with CUDA "
                                 "when they take at most half of its free memory (default)")

    def build(self) -> None:
        extra = self.options.extra
        self.l2_weight = float(extra.get("l2_weight", 1.0))
        self.edge_weight = float(extra.get("edge_weight", 0.5))
        self.stats_frames = int(extra.get("stats_frames", 512))
        self.sample = not extra.get("deterministic", False)
        self.decoder_only = bool(extra.get("decoder_only", False))
        self.channels_last = bool(extra.get("channels_last", False))
        init = extra.get("init")
        if self.decoder_only and not init:
            raise ValueError("--decoder-only needs --init RUN: the trained autoencoder whose encoder to keep")
        frames_per_batch = self.local_batch_size * self.clip_frames
        # Encoding costs about a third of a training step per batch; decoder-only measures nothing.
        self.final_save_cost_steps = 0.0 if self.decoder_only else math.ceil(self.stats_frames / frames_per_batch) / 3

        if init:
            directory = ckpt.resolve_checkpoint(init)
            self.config.autoencoder = ckpt.load_config(directory).autoencoder
            self.autoencoder = ckpt.load_module(Autoencoder(self.config.autoencoder).to(self.device), directory,
                                                "autoencoder")
        else:
            self.autoencoder = Autoencoder(self.config.autoencoder).to(self.device)
        if self.channels_last:  # before the optimizer and EMA copy its weights
            self.autoencoder.to(memory_format=torch.channels_last)
        if self.decoder_only:
            self.autoencoder.encoder.requires_grad_(False)  # before DDP, which then syncs only the decoder
        self.net = self.ddp(self.autoencoder)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.autoencoder.parameters() if p.requires_grad], lr=self.lr, betas=(0.9, 0.99),
            weight_decay=self.options.weight_decay,
        )
        # The EMA of a frozen weight is that weight exactly (lerp of equal values), so the
        # shipped encoder stays bit-identical.
        self.ema = EMA(self.autoencoder, decay=self.options.ema_decay)
        self.build_discriminator()

    def build_discriminator(self) -> None:
        extra = self.options.extra
        self.adv_weight = float(extra.get("adv_weight", 0.0))
        self.adv_start = int(extra.get("adv_start", 0))
        self.adaptive = extra.get("adv_weighting", "adaptive") == "adaptive"
        self.discriminator = None
        if self.adv_weight <= 0:
            return
        dc = DiscriminatorConfig(channels=int(extra.get("disc_channels", DiscriminatorConfig.channels)),
                                 layers=int(extra.get("disc_layers", DiscriminatorConfig.layers)))
        self.discriminator = PatchDiscriminator(dc).to(self.device)
        if self.channels_last:
            self.discriminator.to(memory_format=torch.channels_last)
        self.disc_net = self.ddp(self.discriminator)
        # beta1 0.5: the usual GAN setting (DCGAN, VQGAN); momentum lags a moving target.
        self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(),
                                                lr=float(extra.get("disc_lr") or self.lr), betas=(0.5, 0.9))

    def models(self) -> dict[str, nn.Module]:
        if self.discriminator is None:
            return {"autoencoder": self.autoencoder}
        return {"autoencoder": self.autoencoder, "discriminator": self.discriminator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self.discriminator is None:
            return {"autoencoder": self.optimizer}
        return {"autoencoder": self.optimizer, "discriminator": self.disc_optimizer}

    def emas(self) -> dict[str, EMA]:
        return {"autoencoder": self.ema}

    def _frames(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """frames uint8 [b, L, H, W, 3] -> float [b*L, 3, H, W] in [-1, 1] (channels-last in memory with
        --channels-last), checked against the config."""
        frames = batch["frames"]
        cfg = self.config.autoencoder
        if tuple(frames.shape[-3:-1]) != (cfg.frame_height, cfg.frame_width):
            raise ValueError(
                f"data frames are {frames.shape[-3]}x{frames.shape[-2]} (HxW) but the autoencoder is configured for "
                f"{cfg.frame_height}x{cfg.frame_width}; pass --set autoencoder.frame_height={frames.shape[-3]} "
                f"--set autoencoder.frame_width={frames.shape[-2]} or choose the matching --preset"
            )
        x = frames_to_float(channels_first(frames.flatten(0, 1)))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_step(self, batch, step):
        x = self._frames(batch)
        with self.autocast():
            out = self.net(x, sample=self.sample)
        rec = out.reconstruction.float()
        l1 = (rec - x).abs().mean()
        l2 = (rec - x).square().mean()
        edge = edge_loss(rec, x)
        loss = l1 + self.l2_weight * l2 + self.edge_weight * edge
        if not self.decoder_only:  # a frozen encoder gets no KL gradient
            loss = loss + self.config.autoencoder.kl_weight * out.kl
        adversarial = self.discriminator is not None and step >= self.adv_start
        if adversarial:
            adv, weight = self.adversarial_term(loss, rec)
            loss = loss + weight * adv
        grad_norm = self.optimize(loss, "autoencoder")
        psnr = 10 * torch.log10(4.0 / l2.detach().clamp_min(1e-12))  # peak-to-peak 2 on [-1, 1]
        metrics = {"loss": loss.detach(), "l1": l1.detach(), "l2": l2.detach(), "edge": edge.detach(),
                   "kl": out.kl.detach(), "psnr": psnr, "grad_norm": grad_norm}
        if self.discriminator is not None:
            # The discriminator trains from step 0, so that it is already a judge of this decoder's
            # blur when its verdict joins the decoder's loss at --adv-start.
            zero = torch.zeros((), device=self.device)  # before --adv-start: every row has the columns
            metrics.update({"adv": adv.detach() if adversarial else zero, "adv_weight": weight if adversarial else zero,
                            **self.discriminator_step(x, rec.detach())})
        return metrics

    def adversarial_term(self, rec_loss: torch.Tensor, rec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's adversarial loss on reconstructions [N, 3, H, W], and its weight (a detached scalar)."""
        # The plain module, not DDP: this backward only carries gradient to the decoder (the
        # discriminator's own gradients from it are discarded by its zero_grad).
        with self.autocast():
            logits = self.discriminator(rec)
        adv = generator_loss(logits)
        weight = torch.full((), self.adv_weight, device=self.device)  # a fill, not a copy from the host
        if self.adaptive:
            weight = weight * adaptive_weight(rec_loss, adv, self.autoencoder.decoder.conv_out.weight)
        return adv, weight

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """One hinge-loss update of the discriminator on true and decoded frames [N, 3, H, W]."""
        with self.autocast():
            logits = self.disc_net(torch.cat([real, fake])).float()
        real_logits, fake_logits = logits.chunk(2)
        d_loss = discriminator_loss(real_logits, fake_logits)
        self.optimize(d_loss, "discriminator")
        return {"d_loss": d_loss.detach(), "d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}

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
        if self.decoder_only:  # the encoder is frozen: its latents keep the statistics they were trained with
            return
        shipped = copy.deepcopy(self.autoencoder)
        self.ema.copy_to(shipped)
        shipped.eval()
        mu, std = self.latent_statistics(shipped)
        self.autoencoder.latent_shift.copy_(mu)
        self.autoencoder.latent_scale.copy_(std)
        self.ema.buffers["latent_shift"].copy_(mu)
        self.ema.buffers["latent_scale"].copy_(std)
