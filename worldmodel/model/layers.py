"""Small building blocks of the transformer: norms, feed-forward, embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.model.rope import angle_dtype, tracing


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:  # the fused kernel, same arithmetic
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


_GELU_K = 2 * math.sqrt(2 / math.pi)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """F.gelu(x, approximate="tanh"). For inference on CPU as x * sigmoid(2k (x + 0.044715 x^3)),
    the same function (0.5 (1 + tanh(u)) = sigmoid(2u)) in a few in-place passes, about 1.7x
    faster than PyTorch's tanh there; equal to float rounding (tests/test_model_fast_paths.py).
    Elsewhere (CUDA, autograd, export) PyTorch's fused GELU."""
    if x.device.type != "cpu" or torch.is_grad_enabled() or tracing():
        return F.gelu(x, approximate="tanh")
    u = torch.addcmul(x, x * x, x, value=0.044715)
    return u.mul_(_GELU_K).sigmoid_().mul_(x)


class FeedForward(nn.Module):
    """Linear -> GELU(tanh) -> Linear, as in Wan2.1."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's 1-D sinusoidal features [cos, sin] of timesteps t [...] -> [..., dim] float32."""
    half = dim // 2
    dtype = angle_dtype()  # float64; float32 inside an ONNX export (TensorRT has no float64)
    freqs = torch.pow(10000.0, -torch.arange(half, device=t.device, dtype=dtype) / half)
    ang = t.to(dtype)[..., None] * freqs
    return torch.cat([ang.cos(), ang.sin()], dim=-1).float()


class TimeActionEmbedding(nn.Module):
    """Per-frame conditioning vector from the flow-matching time and the frame's action.

    t [B, F] (0..1000 scale), actions [B, F, A] normalised to [-1, 1] -> (e, a), each [B, F, dim]:
    e = time + action features (what adaLN modulates with), a = the action features alone (what
    the blocks' direct action path adds to the tokens). Whether the action branch starts at zero
    is the model's choice (`ModelConfig.action_zero_init`), made in CausalDiT's initialisation.
    """

    def __init__(self, freq_dim: int, dim: int, action_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.action_mlp = nn.Sequential(nn.Linear(action_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.time_mlp(sinusoidal_embedding(t, self.freq_dim).to(self.time_mlp[0].weight.dtype))
        a = self.action_mlp(actions.to(e.dtype))
        return e + a, a


def init_linear(module: nn.Module) -> None:
    """Xavier-uniform linears with zero bias (DiT's initialisation)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale1: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, given scale1 = 1 + scale (made once for every layer)."""
    return torch.addcmul(shift, x, scale1)


