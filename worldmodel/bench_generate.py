"""`magworld bench generate`: the generator loop alone (denoise steps + memory write per block),
with random weights at any preset's size, so it can be compared with published models at theirs.

The timed blocks start from an empty memory (after untimed warm-up blocks, the memory is
cleared), as a fresh video does. Reported: frames/s over all timed blocks, over the first
`--first-frames` latent frames, and in the steady state (the blocks that attend to as many
memory slots as the loop ever does), with per-block p50/p99; the FLOPs of a block counted from
the shapes (worldmodel/bench_flops.py) and the TFLOP/s that makes; with `--profile`, the GPU time
of one steady-state pass split into attention kernels, matrix products and the rest, and each
one's TFLOP/s. With `--temporal-compression K` (Wan's VAE: 4) also video frames/s, as published
figures count them (K video frames per latent frame, the first latent frame 1).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from worldmodel.bench_flops import block_flops, kernel_split, pass_flops
from worldmodel.config import apply_overrides, preset
from worldmodel.machine import describe, report
from worldmodel.model import CausalDiT, MemoryView
from worldmodel.model.attention import SDPA_BACKENDS, sdpa_preference
from worldmodel.model.fused import MODES, compile_token_paths, compiled_graphs
from worldmodel.rollout import Rollout


def register(sub):
    p = sub.add_parser(
        "generate",
        help="time the block generator loop with random weights",
        description="magworld bench generate: time the frame-AR generator loop (few-step denoising "
        "of each block against the KV memory, then the clean pass that writes memory) with random "
        "weights at a preset's size, from an empty memory to its steady state. Decoding to pixels "
        "is not included.",
    )
    p.add_argument("--preset", default="doom-gpu", help="model preset (tiny, doom-cpu, doom-gpu, doom-small, wan-1.3b)")
    p.add_argument("--height", type=int, help="frame height in pixels (latent = height / 8)")
    p.add_argument("--width", type=int, help="frame width in pixels (latent = width / 8)")
    p.add_argument("--strategy", default=None, help="memory strategy (default: the preset's)")
    p.add_argument("--blocks", type=int, default=40, help="timed blocks, from an empty memory")
    p.add_argument("--warmup", type=int, default=5, help="untimed blocks first (then the memory is cleared)")
    p.add_argument("--first-frames", type=int, default=21,
                   help="also report frames/s over this many latent frames from the start (default 21)")
    p.add_argument("--temporal-compression", type=int, default=1,
                   help="video frames per latent frame, to report video frames/s too (Wan2.1's VAE: 4)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="weights and activations (default bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--attention", default="auto", choices=SDPA_BACKENDS,
                   help="SDPA backend to try first (default: PyTorch's choice)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer (with --cuda-graphs: its token paths, before capture; "
                   "worldmodel/model/fused.py)")
    p.add_argument("--compile-mode", default="default", choices=MODES,
                   help="inductor mode of --compile --cuda-graphs (its own CUDA graphs stay off)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="run the loop as the cudagraph backend does: each network pass one captured CUDA graph")
    p.add_argument("--profile", action="store_true",
                   help="split the GPU time of one steady-state pass by kernel kind (attention, matmul, other)")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE", help="config overrides")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.set_defaults(func=run)


def bench_config(args: argparse.Namespace):
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
    return apply_overrides(cfg, overrides)


def run(args: argparse.Namespace) -> int:
    cfg = bench_config(args)
    if args.blocks < 1:
        raise SystemExit("magworld bench generate: --blocks must be at least 1")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    torch.manual_seed(0)
    model = CausalDiT(cfg.model).to(args.device, dtype).eval()
    with torch.no_grad():  # random weights: the zero init would make every block an identity
        for p in model.parameters():
            p.normal_(0, 0.02)
    with sdpa_preference(args.attention):
        start = time.perf_counter()
        loop = (GraphLoop(cfg, model, dtype, args.device, args.compile_mode if args.compile else None)
                if args.cuda_graphs else EagerLoop(cfg, model, dtype, args))
        setup_s = time.perf_counter() - start
        times, attended = time_loop(loop, args)
        split = profile_pass(cfg, model, dtype, args.device, max(attended)) if args.profile else None
    result = summary(args, cfg, model, dtype, times, attended, loop.memory.num_used, loop.passes, split)
    result["setup_s"] = round(setup_s, 1)  # model placement and, with --cuda-graphs, every compile and capture
    if args.compile:
        result["compile_mode"] = args.compile_mode if args.cuda_graphs else "default (whole model)"
        result["compiled_graphs"] = compiled_graphs()  # one per token path and shape (fused.py); more = recompiles
    return report(result, args.json)


class EagerLoop:
    """Rollout in eager PyTorch (optionally torch.compile'd), under autocast on CUDA."""

    def __init__(self, cfg, model, dtype, args):
        self.cfg, self.dtype, self.device = cfg, dtype, args.device
        self.roll = Rollout(model, cfg.sampler, cfg.memory, dtype=dtype)
        if args.compile:
            compiled = torch.compile(model)
            self.roll.generator = compiled
            if self.roll.memory_model is model:
                self.roll.memory_model = compiled
        self.passes = len(self.roll.sigmas) + (1 if self.roll.strategy.kept_frames() else 0)
        m = cfg.model
        self.actions = torch.zeros(1, m.block_frames, m.action_dim)
        self.shape = (1, m.block_frames, m.latent_channels, m.latent_height, m.latent_width)
        self.cuda = args.device.startswith("cuda")

    @property
    def memory(self):
        return self.roll.memory

    def step(self) -> int:
        """One block; returns the memory slots it attended to."""
        slots = self.roll.strategy.attend_slots(self.roll.memory, None)
        attended = self.roll.memory.num_used if slots is None else len(slots)
        with torch.autocast("cuda", dtype=self.dtype, enabled=self.cuda and self.dtype != torch.float32):
            noise = torch.randn(self.shape, device=self.device, dtype=self.dtype)
            self.roll.generate(self.actions, noise=noise)
        return attended

    def reset(self) -> None:
        self.roll.reset()


class GraphLoop:
    """The same loop through runtime/backends/cudagraph_backend.py (the generator also writes
    memory, as Rollout does when there is no memory model); every graph is captured here, after
    the compile of the token paths with --compile."""

    def __init__(self, cfg, model, dtype, device, compile_mode: str | None = None):
        from runtime.backends.cudagraph_backend import CudaGraphBackend
        from worldmodel.autoencoder import Autoencoder
        from worldmodel.bundle import WorldModel

        if compile_mode is not None:  # what the backend's compile=True does to each of its networks
            compile_token_paths(model, compile_mode)
        precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
        world = WorldModel(cfg, Autoencoder(cfg.autoencoder), model, None)  # the backend places it
        # one session: no batched graphs (at the Wan size each batch row's memory is gigabytes)
        self.session = CudaGraphBackend(None, device, precision, model=world, max_batch=1).new_session()
        self.passes = len(self.session.sigmas) + (1 if self.session.strategy.kept_frames() else 0)
        self.actions = np.zeros((cfg.model.block_frames, cfg.model.action_dim), np.float32)

    @property
    def memory(self):
        return self.session.memory

    def step(self) -> int:
        self.session.generate_latents(self.actions)
        return self.session.held

    def reset(self) -> None:
        self.session.reset()


def time_loop(loop, args) -> tuple[list[float], list[int]]:
    """Warm-up blocks, a cleared memory, then (seconds, attended slots) of each timed block."""
    cuda = args.device.startswith("cuda")
    for _ in range(args.warmup):
        loop.step()
    loop.reset()
    times, attended = [], []
    for _ in range(args.blocks):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        attended.append(loop.step())
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times, attended


def profile_pass(cfg, model, dtype, device, slots: int) -> dict | None:
    """GPU ms of one denoising pass against `slots` held slots, by kernel kind (CUDA only)."""
    if not device.startswith("cuda"):
        return None
    m = cfg.model
    g = torch.Generator(device).manual_seed(0)
    shape = (m.layers, 1, slots, m.tokens_per_frame, m.heads, m.head_dim)
    k, v = (torch.randn(shape, generator=g, device=device, dtype=dtype) for _ in range(2))
    memory = MemoryView(k, v, torch.ones(slots, dtype=torch.bool, device=device), all_valid=True)
    x = torch.randn(1, m.block_frames, m.latent_channels, m.latent_height, m.latent_width, generator=g,
                    device=device, dtype=dtype)
    t = torch.full((1, m.block_frames), 500.0, device=device)
    actions = torch.zeros(1, m.block_frames, m.action_dim, device=device, dtype=dtype)
    pos = torch.arange(slots, slots + m.block_frames, device=device)

    def forward():
        with torch.no_grad():
            model(x, t, actions, pos, memory=memory, validate=False)

    return kernel_split(forward)


def sig(x: float) -> float:
    """Four significant digits (the FLOP figures span 1e-6 to 1e3 TFLOP across presets)."""
    return float(f"{x:.4g}")


def summary(args, cfg, model, dtype, times, attended, slots_used, passes, split) -> dict:
    t = np.array(times)
    att = np.array(attended)
    m = cfg.model
    bf = m.block_frames
    flops = [block_flops(m, int(s), passes) for s in att]
    total = np.array([f["matmul"] + f["attention"] for f in flops])
    first = min(len(t), math.ceil(args.first_frames / bf))
    steady = att == att.max()
    result = {
        "preset": cfg.name,
        "frame_size": [cfg.autoencoder.frame_height, cfg.autoencoder.frame_width],
        "tokens_per_frame": m.tokens_per_frame,
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "strategy": cfg.memory.strategy,
        "steps": len(cfg.sampler.timesteps),
        "passes_per_block": passes,
        "dtype": str(dtype).replace("torch.", ""),
        "attention_backend": args.attention,
        "compiled": bool(args.compile),
        "cuda_graphs": bool(args.cuda_graphs),
        "timed_blocks": len(t),
        "frames_per_s": round(bf * len(t) / t.sum(), 2),
        "block_ms_p50": round(1000 * float(np.median(t)), 2),
        "block_ms_p99": round(1000 * float(np.percentile(t, 99)), 2),
        "first_frames": first * bf,
        "frames_per_s_first": round(first * bf / t[:first].sum(), 2),
        "steady_slots": int(att.max()),
        "steady_blocks": int(steady.sum()),
        "frames_per_s_steady": round(bf * int(steady.sum()) / t[steady].sum(), 2),
        "block_ms_p50_steady": round(1000 * float(np.median(t[steady])), 2),
        "block_ms_p99_steady": round(1000 * float(np.percentile(t[steady], 99)), 2),
        "block_tflop_steady": sig(float(total[steady].mean()) / 1e12),
        "tflop_per_s_steady": sig(float(total[steady].sum() / t[steady].sum()) / 1e12),
        "tflop_per_s_first": sig(float(total[:first].sum() / t[:first].sum()) / 1e12),
    }
    k = args.temporal_compression
    if k > 1:
        result["video_frames_per_s_first"] = round((k * (first * bf - 1) + 1) / t[:first].sum(), 2)
        result["video_frames_per_s_steady"] = round(k * result["frames_per_s_steady"], 2)
    if split is not None:
        one = pass_flops(m, int(att.max()))
        result["pass_ms_attention"] = round(split["attention"], 3)
        result["pass_ms_matmul"] = round(split["matmul"], 3)
        result["pass_ms_other"] = round(split["other"], 3)
        for kind in ("attention", "matmul"):
            ms = split[kind]
            result[f"{kind}_tflop_per_s"] = sig(one[kind] / (ms / 1000) / 1e12) if ms > 0 else None
    result["memory_slots_used"] = slots_used
    result["machine"] = describe(args.device)
    return result
