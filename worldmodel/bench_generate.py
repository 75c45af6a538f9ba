"""`magworld bench generate`: the generator loop alone (denoise steps + memory write per block),
with random weights at any preset's size, so it can be compared with published models at theirs.

Prints frames/s and per-block latency (median, p99) and the machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from worldmodel.config import apply_overrides, preset
from worldmodel.machine import describe, report
from worldmodel.model import CausalDiT
from worldmodel.rollout import Rollout


def register(sub):
    p = sub.add_parser(
        "generate",
        help="time the block generator loop with random weights",
        description="magworld bench generate: time the frame-AR generator loop (few-step denoising "
        "of each block against the KV memory, then the clean pass that writes memory) with random "
        "weights at a preset's size. Decoding to pixels is not included.",
    )
    p.add_argument("--preset", default="doom-small", help="model preset (tiny, doom-cpu, doom-small, wan-1.3b)")
    p.add_argument("--height", type=int, help="frame height in pixels (latent = height / 8)")
    p.add_argument("--width", type=int, help="frame width in pixels (latent = width / 8)")
    p.add_argument("--strategy", default=None, help="memory strategy (default: the preset's)")
    p.add_argument("--blocks", type=int, default=40, help="timed blocks")
    p.add_argument("--warmup", type=int, default=5, help="untimed blocks first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="weights and activations (default bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="run the loop as the cudagraph backend does: each network pass one captured CUDA graph")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE", help="config overrides")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = preset(args.preset)
    overrides = list(args.set)
    if args.height or args.width:
        down = cfg.autoencoder.downsample
        h = args.height or cfg.autoencoder.frame_height
        w = args.width or cfg.autoencoder.frame_width
        overrides += [f"model.latent_height={h // down}", f"model.latent_width={w // down}",
                      f"autoencoder.frame_height={h}", f"autoencoder.frame_width={w}"]
    if args.strategy:
        overrides.append(f"memory.strategy={args.strategy}")
    cfg = apply_overrides(cfg, overrides)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    torch.manual_seed(0)
    model = CausalDiT(cfg.model).to(args.device, dtype).eval()
    with torch.no_grad():  # random weights: the zero init would make every block an identity
        for p in model.parameters():
            p.normal_(0, 0.02)
    if args.cuda_graphs:
        return run_graphs(args, cfg, model, dtype)
    roll = Rollout(model, cfg.sampler, cfg.memory, dtype=dtype)
    if args.compile:
        compiled = torch.compile(model)
        roll.generator = compiled
        if roll.memory_model is model:
            roll.memory_model = compiled
    bf = cfg.model.block_frames
    actions = torch.zeros(1, bf, cfg.model.action_dim, device=args.device)
    cuda = args.device.startswith("cuda")
    times = []
    with torch.autocast("cuda", dtype=dtype, enabled=cuda and dtype != torch.float32):
        for i in range(args.warmup + args.blocks):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            noise = torch.randn(1, bf, cfg.model.latent_channels, cfg.model.latent_height, cfg.model.latent_width,
                                device=args.device, dtype=dtype)
            roll.generate(actions, noise=noise)
            if cuda:
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    return report(summary(args, cfg, model, dtype, times, roll.memory.num_used), args.json)


def run_graphs(args, cfg, model, dtype) -> int:
    """The same loop through runtime/backends/cudagraph_backend.py (the generator also writes
    memory, as Rollout does above when there is no memory model). Decoding is not timed."""
    from runtime.backends.cudagraph_backend import CudaGraphBackend
    from worldmodel.autoencoder import Autoencoder
    from worldmodel.bundle import WorldModel

    precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    world = WorldModel(cfg, Autoencoder(cfg.autoencoder), model.float().cpu(), None)
    session = CudaGraphBackend(None, args.device, precision, model=world).new_session()
    actions = np.zeros((cfg.model.block_frames, cfg.model.action_dim), np.float32)
    cuda = args.device.startswith("cuda")
    times = []
    for i in range(args.warmup + args.blocks):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        session.generate_latents(actions)
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return report(summary(args, cfg, world.generator, dtype, times, session.memory.num_used), args.json)


def summary(args, cfg, model, dtype, times, slots_used) -> dict:
    t = np.array(times)
    return {
        "preset": cfg.name,
        "frame_size": [cfg.autoencoder.frame_height, cfg.autoencoder.frame_width],
        "tokens_per_frame": cfg.model.tokens_per_frame,
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "strategy": cfg.memory.strategy,
        "steps": len(cfg.sampler.timesteps),
        "dtype": str(dtype).replace("torch.", ""),
        "compiled": bool(args.compile),
        "cuda_graphs": bool(args.cuda_graphs),
        "frames_per_s": round(cfg.model.block_frames * len(t) / t.sum(), 2),
        "block_ms_p50": round(1000 * float(np.median(t)), 2),
        "block_ms_p99": round(1000 * float(np.percentile(t, 99)), 2),
        "memory_slots_used": slots_used,
        "machine": describe(args.device),
    }
