"""What one block of the generator loop must compute, counted from the shapes, and where the GPU
spends its time on it (attention kernels, matrix products, the rest) — so `magworld bench
generate` can report the TFLOP/s it reaches against the chip's ceilings.

FLOPs of one forward pass of CausalDiT over one block (B frames of N tokens, T = B*N tokens,
width d, FFN width f, L layers, S memory slots attended, Lc prompt tokens of width Dt),
counting a multiply-add as 2:

    matmul     patch embedding 2*T*(C*ph*pw)*d + head 2*T*d*(ph*pw*C)
               + per layer: self-attention q,k,v,o 4*2*T*d*d, FFN 2*2*T*d*f,
                 cross-attention q,o 2*2*T*d*d and k,v on the prompt 2*2*Lc*d*d
               + prompt embedding 2*Lc*Dt*d + 2*Lc*d*d
    attention  per layer: self 4*T*(S*N + T)*d (Q K^T and P V), cross 4*T*Lc*d

The per-frame time/action embeddings (B rows) are left out: under 0.1% at every preset.
"""

from __future__ import annotations

import re

import torch

from worldmodel.config import ModelConfig


def pass_flops(cfg: ModelConfig, slots: int) -> dict[str, float]:
    """{"matmul": ..., "attention": ...} FLOPs of one forward pass over one block against `slots`
    attended memory slots."""
    t = cfg.block_frames * cfg.tokens_per_frame
    d, f, n = cfg.dim, cfg.ffn_dim, cfg.tokens_per_frame
    patch = cfg.latent_channels * cfg.patch[1] * cfg.patch[2]
    layer_mm = 2 * t * d * (4 * d + 2 * f)
    layer_attn = 4 * t * (slots * n + t) * d
    prompt = 0
    if cfg.cross_attention:
        lc = cfg.text_tokens
        layer_mm += 2 * 2 * t * d * d + 2 * 2 * lc * d * d
        layer_attn += 4 * t * lc * d
        prompt = 2 * lc * cfg.text_dim * d + 2 * lc * d * d
    matmul = cfg.layers * layer_mm + 2 * 2 * t * patch * d + prompt
    return {"matmul": float(matmul), "attention": float(cfg.layers * layer_attn)}


def block_flops(cfg: ModelConfig, slots: int, passes: int) -> dict[str, float]:
    """FLOPs of one block of the loop: `passes` forward passes (denoising steps + the memory
    write's clean pass) against `slots` attended slots."""
    one = pass_flops(cfg, slots)
    return {k: passes * v for k, v in one.items()}


# Kernel names by kind (FlashAttention, cuDNN's fused SDPA, the memory-efficient kernel; cuBLAS,
# CUTLASS and cuDNN's implicit-GEMM convolutions). Attention is matched first: "fmha_cutlass".
ATTENTION_KERNELS = re.compile(r"flash|fmha|sdpa|attention|attn", re.I)
# triton_tem: inductor's Triton matmul templates (--compile-mode max-autotune-no-cudagraphs); its fused
# elementwise kernels (triton_poi_, triton_red_, triton_per_) are "other", even with a bias in their name
MATMUL_KERNELS = re.compile(r"gemm|cutlass|xmma|nvjet|cublas|matmul|wgmma|triton_tem", re.I)


def kernel_kind(name: str) -> str:
    if ATTENTION_KERNELS.search(name):
        return "attention"
    if MATMUL_KERNELS.search(name):
        return "matmul"
    return "other"


def kernel_split(forward, repeats: int = 3) -> dict[str, float]:
    """GPU time per call of `forward()` (a no-argument callable running one pass) by kernel
    kind, in ms: {"attention", "matmul", "other"}, from the PyTorch profiler's kernel records
    (one untimed call first)."""
    from torch.profiler import ProfilerActivity, profile

    forward()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            forward()
        torch.cuda.synchronize()
    totals = {"attention": 0.0, "matmul": 0.0, "other": 0.0}
    for e in prof.key_averages():
        if "cuda" not in str(getattr(e, "device_type", "")).lower():
            continue
        us = getattr(e, "self_device_time_total", None)
        if us is None:
            us = getattr(e, "self_cuda_time_total", 0.0)
        totals[kernel_kind(e.key)] += us / 1000 / repeats
    return totals
