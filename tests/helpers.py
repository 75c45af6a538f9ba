"""Shared construction of tiny models and inputs for the tests."""

import torch

from worldmodel.actions import ACTION_HIGH, ACTION_LOW
from worldmodel.model import CausalDiT


def tiny_model(cfg, seed=0, std=0.1):
    from conftest import randomize

    torch.manual_seed(seed)
    return randomize(CausalDiT(cfg.model), seed, std).eval()


def clip_inputs(cfg, batch=2, frames=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    m = cfg.model
    x = torch.randn(batch, frames, m.latent_channels, m.latent_height, m.latent_width, generator=g)
    t = torch.rand(batch, frames, generator=g) * 1000
    lo, hi = torch.as_tensor(ACTION_LOW), torch.as_tensor(ACTION_HIGH)
    a = lo + (hi - lo) * torch.rand(batch, frames, len(lo), generator=g)
    return x, t, a
