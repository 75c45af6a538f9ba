"""Frame-wise convolutional VAE: RGB frames <-> latent frames for the diffusion transformer.

Frames  `[N, 3, H, W]`, float in [-1, 1] (or uint8 in [0, 255], converted on entry).
Latents `[N, C, ceil(H/d), ceil(W/d)]`, float, ~zero mean and unit variance per channel once the
training stage has estimated `latent_shift` / `latent_scale` (C = `latent_channels`,
d = `downsample`).

The VAE is near-deterministic (a tiny KL weight keeps the posterior from collapsing to a point
without blurring reconstructions); `encode` returns the posterior mean. The decoder runs once per
generated frame, so it is lean: GroupNorm/SiLU residual blocks and nearest-neighbour upsampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worldmodel.config import AutoencoderConfig
from worldmodel.model.rope import tracing

# Clamp of the posterior log-variance: keeps exp() finite when the KL term is this weak.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] in [0, 255] -> float32 in [-1, 1]; float input is returned as is."""
    if frames.dtype == torch.uint8:
        return frames.float().div_(127.5).sub_(1.0)
    if not frames.is_floating_point():
        raise TypeError(f"frames must be uint8 or float, got {frames.dtype}")
    return frames


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float [..., 3, H, W] in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return ((frames.float().clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)


def channels_first(frames: torch.Tensor) -> torch.Tensor:
    """[..., H, W, 3] (as stored and as the dataset yields them) -> [..., 3, H, W]."""
    if frames.shape[-1] != 3:
        raise ValueError(f"expected channels-last RGB frames [..., H, W, 3], got shape {tuple(frames.shape)}")
    return frames.movedim(-1, -3)


@dataclass
class AutoencoderOutput:
    reconstruction: torch.Tensor  # [N, 3, H, W] float, ~[-1, 1] (not clamped)
    kl: torch.Tensor  # scalar: KL(q(z|x) || N(0, I)), mean per latent element
    mean: torch.Tensor  # [N, C, h, w] unnormalised posterior mean


def _groups(channels: int) -> int:
    """Largest group count <= 32 dividing `channels` (tiny configs have few channels)."""
    return max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch, eps=1e-6)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch, eps=1e-6)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    # Nearest + conv rather than a transposed conv: no checkerboard artefacts, and cheap.
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.is_grad_enabled() and not tracing():
            return upsample_conv(x, self.conv.weight, self.conv.bias)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _fold_taps(w: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3 taps of a kernel along `dim`, seen from the half-resolution map: an even output
    row reads (tap 0 | taps 1 + 2) of input rows (i - 1, i), an odd one (taps 0 + 1 | tap 2) of
    rows (i, i + 1)."""
    t0, t1, t2 = w.unbind(dim)
    return torch.stack([t0, t1 + t2], dim), torch.stack([t0 + t1, t2], dim)


def upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv2d(interpolate(x, 2x nearest), weight [O, C, 3, 3], bias, padding=1) without making
    the upsampled map: each of the four output parities is a 2x2 convolution of x itself (the
    taps that land on the same input pixel summed), all four in one convolution with 4*O
    outputs, interleaved into place. 4/9 of the multiplies; ~1.8x faster on CPU. Equal to the
    upsample-then-convolve form to float rounding (tests/test_autoencoder.py). x [N, C, h, w]
    -> [N, O, 2h, 2w], channels-last (as the decoder runs on CPU)."""
    n, _, h, w = x.shape
    o = weight.shape[0]
    kernels = [k for rows in _fold_taps(weight, 2) for k in _fold_taps(rows, 3)]  # parity (di, dj), row-major
    y = F.conv2d(x, torch.cat(kernels), bias.repeat(4), padding=1)  # [N, 4*O, h+1, w+1]
    y = y.unflatten(1, (2, 2, o))
    out = x.new_empty(n, h, 2, w, 2, o)
    for di in (0, 1):
        for dj in (0, 1):
            out[:, :, di, :, dj] = y[:, di, dj, :, di:di + h, dj:dj + w].permute(0, 2, 3, 1)
    return out.view(n, 2 * h, 2 * w, o).permute(0, 3, 1, 2)


def _stage_channels(config: AutoencoderConfig) -> list[int]:
    """Channels at each resolution, full resolution first: len = log2(downsample) + 1."""
    levels = int(round(math.log2(config.downsample)))
    if 2**levels != config.downsample or levels < 0:
        raise ValueError(f"autoencoder.downsample must be a power of two, got {config.downsample}")
    return [min(config.base_channels * 2**i, config.max_channels) for i in range(levels + 1)]


class Encoder(nn.Module):
    """[N, 3, H, W] (H, W divisible by d) -> posterior mean and log-variance, each [N, C, H/d, W/d]."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        chs = _stage_channels(config)
        self.conv_in = nn.Conv2d(3, chs[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i in range(len(chs) - 1):
            layers += [ResBlock(chs[i], chs[i]) for _ in range(config.res_blocks)]
            layers.append(Downsample(chs[i], chs[i + 1]))
        layers += [ResBlock(chs[-1], chs[-1]) for _ in range(config.res_blocks)]
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(_groups(chs[-1]), chs[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(chs[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(x)))))
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


class Decoder(nn.Module):
    """[N, C, h, w] unnormalised latents -> [N, 3, h*d, w*d] frames ~[-1, 1]."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        chs = _stage_channels(config)[::-1]  # coarsest first
        self.conv_in = nn.Conv2d(config.latent_channels, chs[0], 3, padding=1)
        layers: list[nn.Module] = [ResBlock(chs[0], chs[0]) for _ in range(config.res_blocks)]
        for i in range(len(chs) - 1):
            layers.append(Upsample(chs[i], chs[i + 1]))
            layers += [ResBlock(chs[i + 1], chs[i + 1]) for _ in range(config.res_blocks)]
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(_groups(chs[-1]), chs[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(chs[-1], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.device.type == "cpu" and not tracing():
            # oneDNN's convolutions run ~10% faster on channels-last activations on CPU (the
            # weights may stay as they are); the frames come out channels-last too, so the
            # [..., H, W, 3] view of `frames_to_uint8(...).movedim(-3, -1)` needs no copy.
            z = z.contiguous(memory_format=torch.channels_last)
        return self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(z)))))


class Autoencoder(nn.Module):
    """The frame VAE. Buffers `latent_shift` / `latent_scale` ([C] each) normalise the latents.

    `encode` returns `(mean - latent_shift) / latent_scale`; `decode` inverts that. Both are set
    by the autoencoder training stage from data (initially 0 and 1).
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.register_buffer("latent_shift", torch.zeros(config.latent_channels))
        self.register_buffer("latent_scale", torch.ones(config.latent_channels))

    # --- padding: the conv stack needs H, W divisible by d -------------------------------------

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        d = self.config.downsample
        ph, pw = (-x.shape[-2]) % d, (-x.shape[-1]) % d
        if ph or pw:
            # Replicate, not zeros: a black border would be learnt as part of the picture.
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

    def posterior(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [N, 3, H, W] (uint8 or float in [-1, 1]) -> unnormalised (mean, logvar) [N, C, h, w]."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected frames [N, 3, H, W], got shape {tuple(frames.shape)}")
        return self.encoder(self._pad(frames_to_float(frames)))

    def normalize(self, mean: torch.Tensor) -> torch.Tensor:
        shift = self.latent_shift.view(1, -1, 1, 1).to(mean.dtype)
        scale = self.latent_scale.view(1, -1, 1, 1).to(mean.dtype)
        return (mean - shift) / scale

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        shift = self.latent_shift.view(1, -1, 1, 1).to(latents.dtype)
        scale = self.latent_scale.view(1, -1, 1, 1).to(latents.dtype)
        return latents * scale + shift

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [N, 3, H, W] uint8, or float in [-1, 1] -> normalised latents [N, C, ceil(H/d), ceil(W/d)]."""
        mean, _ = self.posterior(frames)
        return self.normalize(mean)

    def decode(self, latents: torch.Tensor, frame_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Normalised latents [N, C, h, w] -> frames [N, 3, H, W] float ~[-1, 1] (not clamped).

        The output is cropped to `frame_size` (H, W); by default to the configured frame size when
        the latent has the configured latent size, else it is [h*d, w*d].
        """
        if latents.dim() != 4 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"expected latents [N, {self.config.latent_channels}, h, w], got shape {tuple(latents.shape)}"
            )
        frames = self.decoder(self.denormalize(latents))
        if frame_size is None and latents.shape[-2:] == (self.config.latent_height, self.config.latent_width):
            frame_size = (self.config.frame_height, self.config.frame_width)
        if frame_size is not None:
            frames = frames[..., : frame_size[0], : frame_size[1]]
        return frames

    def forward(self, frames: torch.Tensor, sample: bool = True) -> AutoencoderOutput:
        """Training pass: frames [N, 3, H, W] -> reconstruction [N, 3, H, W] and KL (see AutoencoderOutput)."""
        height, width = frames.shape[-2:]
        mean, logvar = self.posterior(frames)
        z = mean
        if sample:
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        reconstruction = self.decoder(z)[..., :height, :width]
        kl = 0.5 * (mean.float().square() + logvar.float().exp() - 1.0 - logvar.float()).mean()
        return AutoencoderOutput(reconstruction=reconstruction, kl=kl, mean=mean)


def load_autoencoder(directory, device: str | torch.device = "cpu") -> Autoencoder:
    """The autoencoder saved in a checkpoint directory (or a run directory's `checkpoint/`), in eval mode."""
    from worldmodel.train import checkpoint as ckpt

    directory = ckpt.resolve_checkpoint(directory)
    model = Autoencoder(ckpt.load_config(directory).autoencoder).to(device)
    return ckpt.load_module(model, directory, "autoencoder").eval()
