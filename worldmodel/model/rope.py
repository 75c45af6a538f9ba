"""3-D rotary position embedding (time, height, width), as in Wan2.1.

The head dimension D is split into three parts: time gets D - 4*(D//6) channels, height and width
2*(D//6) each. Channel pairs (2i, 2i+1) are rotated by angle pos * theta^(-2i/n) within each part.
The time position is any integer (or float) frame index, so a clip can start at any offset:
attention scores depend only on the difference of positions.
"""

from __future__ import annotations

import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    part = head_dim // 6
    return head_dim - 4 * part, 2 * part, 2 * part


def angle_dtype() -> torch.dtype:
    """float64 in PyTorch; float32 inside an ONNX export, because TensorRT has no float64 (the
    angles of frame positions below 2^24 then differ by at most ~1e-7 * position radians)."""
    return torch.float32 if torch.onnx.is_in_onnx_export() else torch.float64


def _freqs(n: int, theta: float, device, dtype=torch.float64) -> torch.Tensor:
    return 1.0 / theta ** (torch.arange(0, n, 2, device=device, dtype=dtype) / n)


def rope_angles(
    frame_pos: torch.Tensor, grid: tuple[int, int], head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for tokens laid out frame-major, then row-major within a frame.

    frame_pos: [F] frame indices (int or float). Returns (cos, sin), each [F*h*w, head_dim/2] float32.
    """
    device = frame_pos.device
    dt, dh, dw = rope_split(head_dim)
    h, w = grid
    dtype = angle_dtype()
    f = frame_pos.to(dtype)
    ang_t = f[:, None] * _freqs(dt, theta, device, dtype)[None]  # [F, dt/2]
    ang_h = torch.arange(h, device=device, dtype=dtype)[:, None] * _freqs(dh, theta, device, dtype)[None]
    ang_w = torch.arange(w, device=device, dtype=dtype)[:, None] * _freqs(dw, theta, device, dtype)[None]
    F_ = f.shape[0]
    ang = torch.cat(
        [
            ang_t[:, None, None, :].expand(F_, h, w, -1),
            ang_h[None, :, None, :].expand(F_, h, w, -1),
            ang_w[None, None, :, :].expand(F_, h, w, -1),
        ],
        dim=-1,
    ).reshape(F_ * h * w, head_dim // 2)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x [B, L, H, D] by the angles of cos/sin [L, D/2] (the same
    positions for the whole batch) or [B, L, D/2] (each sample at its own positions)."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    c = cos[:, :, None, :] if cos.dim() == 3 else cos[None, :, None, :]
    s = sin[:, :, None, :] if sin.dim() == 3 else sin[None, :, None, :]
    out = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)
    return out.type_as(x)


def tracing() -> bool:
    """Inside an ONNX export or torch.compile: the graph is traced, so the eager CPU shortcuts
    (complex RoPE, which ONNX lacks; in-place buffers; the CPU GELU) give way to plain ops."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def rope_rotation(cos: torch.Tensor, sin: torch.Tensor):
    """The rotation of `rotate_heads_first` for cos/sin [L, D/2] or [B, L, D/2]: a complex
    tensor e^(i angle) (one multiply per rotation) on the CPU, or (cos, sin) on CUDA and where
    complex numbers are not available (ONNX export, torch.compile). Made once per forward, shared by every layer."""
    if tracing() or cos.device.type != "cpu":  # CUDA keeps the form its graphs were tested with
        return cos, sin
    rot = torch.complex(cos, sin)
    return rot[:, None] if rot.dim() == 3 else rot[None, None]  # [B or 1, 1, L, D/2]: heads-first


def rotate_heads_first(x: torch.Tensor, rot) -> torch.Tensor:
    """`apply_rope` of x [B, L, H, D] by `rope_rotation(cos, sin)`, returned heads-first
    [B, H, L, D] (the layout attention reads). Channel pair (2i, 2i+1) is the complex number
    x_2i + i x_2i+1, so the rotation is one complex multiply; equal to apply_rope to float
    rounding (tests/test_model_fast_paths.py)."""
    if isinstance(rot, tuple):
        return apply_rope(x, *rot).transpose(1, 2)
    xc = torch.view_as_complex(x.float().transpose(1, 2).unflatten(-1, (-1, 2)))
    return torch.view_as_real(xc * rot).flatten(-2).type_as(x)
