"""A PatchGAN discriminator and the hinge losses that sharpen the autoencoder's decoder.

PSNR-trained decoders average over what the latent leaves uncertain, which is blur. A small
discriminator trained from scratch (no pretrained network can be downloaded here) judges every
patch of a frame real or decoded; the decoder is trained to fool it, which rewards texture and
edges that L1/MSE alone would smooth away (VQGAN, Esser et al. 2021; Lucid v1 uses a GAN loss).

Robustness choices: hinge loss, spectral norm on every conv (bounded Lipschitz constant, no
BatchNorm statistics to go stale or to desynchronise across processes), and the VQGAN adaptive
weight, which scales the adversarial gradient to the reconstruction gradient at the decoder's
last layer so one `--adv-weight` suits any decoder size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

ADAPTIVE_MAX = 1e4  # VQGAN's clamp: keeps the weight finite while the adversarial gradient is ~0


@dataclass
class DiscriminatorConfig:
    channels: int = 64  # of the first conv; doubled per stride-2 layer up to 8x
    layers: int = 3  # stride-2 convs: 3 give each logit a 62x62-pixel receptive field (pix2pix: 70x70)


class PatchDiscriminator(nn.Module):
    """Frames [N, 3, H, W] float in [-1, 1] -> real/fake logits per patch [N, 1, ~H/2^L, ~W/2^L]."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        if config.layers < 1 or config.channels < 1:
            raise ValueError(f"discriminator needs >= 1 layer and channel, got {config}")
        chs = [3] + [config.channels * min(2**i, 8) for i in range(config.layers + 1)]
        layers: list[nn.Module] = []
        for i in range(config.layers + 1):
            stride = 2 if i < config.layers else 1  # the last feature layer keeps the patch grid
            layers += [spectral_norm(nn.Conv2d(chs[i], chs[i + 1], 4, stride, padding=1)), nn.LeakyReLU(0.2)]
        layers.append(spectral_norm(nn.Conv2d(chs[-1], 1, 3, padding=1)))
        self.body = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.body(frames)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator: 0 once real patches score >= 1 and decoded ones <= -1."""
    return 0.5 * (torch.relu(1.0 - real_logits.float()).mean() + torch.relu(1.0 + fake_logits.float()).mean())


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Adversarial loss of the decoder: minus the mean logit of its reconstructions."""
    return -fake_logits.float().mean()


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """||d rec / d W|| / ||d adv / d W|| at the decoder's last weight W (VQGAN), detached, clamped.

    Both losses must still hold their graphs (they are retained for the real backward).
    """
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, ADAPTIVE_MAX).detach()
