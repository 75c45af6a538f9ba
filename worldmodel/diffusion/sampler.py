"""Denoising one block against a fixed memory view.

`denoise_block` is the few-step consistency sampler of Self Forcing / MAG: at each level the
network's x0 estimate is re-noised to the next level with fresh noise; the last x0 is the block.
`euler_block` is the multi-step ODE sampler used by the teacher.
"""

from __future__ import annotations

from typing import Callable

import torch

from worldmodel.diffusion.flow_matching import x0_from_v

# velocity(x [B, F, C, h, w], s [B, F] in [0,1]) -> v [B, F, C, h, w]
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _expand(s: torch.Tensor) -> torch.Tensor:
    return s[..., None, None, None]


def fresh_noise(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` [B, ...] from one generator, or one per sample."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def denoise_block(
    velocity: VelocityFn,
    noise: torch.Tensor,
    sigmas: list[float],
    generator: torch.Generator | list[torch.Generator] | None = None,
    exit_step: int | None = None,
) -> torch.Tensor:
    """Few-step sampling from `noise` [B, F, C, h, w] through noise levels `sigmas` (descending).

    generator: one for the whole batch, or one per sample (sessions batched together each keep
    their own noise stream, so a block is the same batched or alone).
    exit_step: stop after that many steps (0-based index of the last one taken) and return its
    x0 estimate — Self Forcing's random exit during training. Returns x0 [B, F, C, h, w].
    """
    b, f = noise.shape[:2]
    x = noise
    last = len(sigmas) - 1 if exit_step is None else exit_step
    x0 = x
    for i, s in enumerate(sigmas[: last + 1]):
        s_t = torch.full((b, f), s, device=noise.device, dtype=noise.dtype)
        x0 = x0_from_v(x, velocity(x, s_t), _expand(s_t))
        if i < last:
            s_next = sigmas[i + 1]
            fresh = fresh_noise(x.shape, generator, x.device, x.dtype)
            x = (1 - s_next) * x0 + s_next * fresh
    return x0


def euler_block(velocity: VelocityFn, noise: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Deterministic Euler integration of the flow ODE through `sigmas` (1 -> 0)."""
    b, f = noise.shape[:2]
    x = noise
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        s_t = torch.full((b, f), s, device=noise.device, dtype=noise.dtype)
        x = x + (s_next - s) * velocity(x, s_t)
    return x
