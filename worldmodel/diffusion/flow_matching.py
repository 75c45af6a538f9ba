"""Rectified-flow conventions used everywhere in magworld.

    x_t = (1 - s) * x0 + s * noise,   s in [0, 1]  (s = 1: pure noise)
    v   = noise - x0                   (what the network predicts)
    x0  = x_t - s * v,   noise = x_t + (1 - s) * v

The network is fed the timestep T = 1000 * s. A user-facing step list (1000, 750, 500, 250) is
mapped through the timestep shift  s' = shift * s / (1 + (shift - 1) * s), which spends the
few steps at high noise where the layout of the frame is decided (as Self Forcing does).
"""

from __future__ import annotations

import torch

from worldmodel.config import SamplerConfig


def shift_sigma(s: torch.Tensor | float, shift: float):
    return shift * s / (1 + (shift - 1) * s)


def step_sigmas(cfg: SamplerConfig) -> list[float]:
    """The few-step sampler's noise levels s in (0, 1], after the shift."""
    out = []
    for t in cfg.timesteps:
        if not 0 < t <= cfg.num_train_timesteps:
            raise ValueError(f"timestep {t} outside (0, {cfg.num_train_timesteps}]")
        out.append(float(shift_sigma(t / cfg.num_train_timesteps, cfg.shift)))
    return out


def teacher_sigmas(cfg: SamplerConfig, steps: int | None = None) -> list[float]:
    """Noise levels 1 -> 0 for the multi-step Euler sampler (steps+1 values, last is 0)."""
    n = steps or cfg.teacher_steps
    lin = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)
    return [float(shift_sigma(s, cfg.shift)) for s in lin]


def add_noise(x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """s broadcastable to x0 (e.g. [B, F, 1, 1, 1])."""
    return (1 - s) * x0 + s * noise


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return x_t - s * v


def noise_from_v(x_t: torch.Tensor, v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return x_t + (1 - s) * v


def sample_train_sigmas(shape, shift: float, generator=None, device=None) -> torch.Tensor:
    """Training noise levels: uniform, then shifted like the sampler's, of the given shape."""
    u = torch.rand(shape, generator=generator, device=device)
    return shift_sigma(u, shift)


def as_timestep(s: torch.Tensor, cfg: SamplerConfig) -> torch.Tensor:
    return s * cfg.num_train_timesteps
