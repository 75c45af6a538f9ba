"""`magworld bench train`: training steps per second of a latent stage, beside a plain reference
(`--stage autoencoder`, the frame autoencoder, is timed by worldmodel/bench_train_autoencoder.py;
`--stage dmd|generator`, the Self Forcing stages, phase by phase by worldmodel/bench_train_self_forcing.py).

The stage is built exactly as `magworld train` builds it (its network, loss, optimizer, EMA,
torch.compile and bf16 autocast on CUDA) and fed batches gathered from a bank of random latents
on the device, as the latent cache feeds it (worldmodel/data/latent_clips.py), so neither data
recording nor a trained autoencoder is needed. In the same process, a plain pre-norm transformer
of the same width, depth, heads, FFN, tokens and [clean ; noisy] frame mask (no adaLN, RoPE or
cross-attention; FlexAttention on CUDA; compiled; bf16; fused AdamW) trains on the same shapes:
the reference row says what this GPU does for a network of that size, so the ratio of the two is
the trainer's overhead.

FLOPs are counted from the shapes (matmuls of every linear layer, and attention over the pairs
of tokens the mask lets see each other), times 3 for forward plus backward.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel import bench_train_autoencoder, bench_train_self_forcing
from worldmodel.bench_stage import (construct_stage, gpu_profile, peak_gb, print_profile, random_checkpoints,
                                    random_latent_batches, timed)
from worldmodel.config import apply_overrides, preset
from worldmodel.machine import describe

# autoencoder: worldmodel/bench_train_autoencoder.py; dmd, generator: worldmodel/bench_train_self_forcing.py
STAGES = ("teacher", "memory", "autoencoder", *bench_train_self_forcing.STAGES)


def register(sub):
    p = sub.add_parser(
        "train",
        help="time training steps of a latent stage beside a plain reference transformer",
        description="magworld bench train: steps/s, tokens/s and achieved TFLOP/s of a training stage at a "
        "preset's size (random latents on the device, as the latent cache gives them), and of a plain "
        "compiled transformer of the same shapes in the same process.",
    )
    p.add_argument("--stage", default="teacher", choices=STAGES, help="training stage (default teacher)")
    p.add_argument("--preset", default="doom-gpu", help="model preset (default doom-gpu)")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE", help="config overrides")
    p.add_argument("--batch-size", type=int, default=32, help="clips per step (default 32)")
    p.add_argument("--clip-blocks", type=int, default=4, help="blocks per clip (default 4: 12 frames)")
    p.add_argument("--steps", type=int, default=50, help="timed steps (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first, compilation included (default 10)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile both networks; auto: on with CUDA")
    p.add_argument("--no-reference", action="store_true", help="skip the reference transformer")
    p.add_argument("--json", help="also write the results as JSON to this file")
    bench_train_autoencoder.add_arguments(p)
    bench_train_self_forcing.add_arguments(p)
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------
# FLOPs


def step_flops(cfg, batch: int, frames: int, frame_mask: torch.Tensor) -> float:
    """Training FLOPs of one step of the DiT on [clean ; noisy] = 2*frames frames (3x forward);
    frame_mask [2*frames, 2*frames] is the stage's mask over that sequence."""
    m = cfg.model
    d, n, layers = m.dim, m.tokens_per_frame, m.layers
    tokens = batch * 2 * frames * n
    per_token = layers * (4 * d * d + 2 * d * m.ffn_dim)  # q, k, v, o and the FFN
    if m.cross_attention:
        per_token += layers * (2 * d * d + 2 * m.text_tokens * d)  # q, o and the scores over the prompt
    if m.action_tokens:
        per_token += layers * d * d / n  # one projection per frame, shared by its tokens
    patch = m.patch[1] * m.patch[2] * m.latent_channels
    per_token += 2 * d * patch  # patch embedding and head
    pairs = float(frame_mask.sum()) * n * n  # (query, key) token pairs the mask lets attend
    attention = batch * layers * 2 * pairs * d  # scores and the weighted sum
    return 3 * 2 * (tokens * per_token + attention)


# ---------------------------------------------------------------------------------------------
# the reference transformer


class ReferenceBlock(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x, mask):
        b, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if mask is None or isinstance(mask, torch.Tensor):
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            from worldmodel.model.flex import flex_attention

            y = flex_attention(q, k, v, mask)
        x = x + self.o(y.transpose(1, 2).reshape(b, length, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class ReferenceTransformer(nn.Module):
    """x [b, L, patch] -> [b, L, patch]: a linear patch embedding, pre-norm blocks, a linear head."""

    def __init__(self, patch: int, d: int, heads: int, layers: int, ffn: int):
        super().__init__()
        self.embed = nn.Linear(patch, d)
        self.blocks = nn.ModuleList(ReferenceBlock(d, heads, ffn) for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, patch)

    def forward(self, x, mask):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x))


# ---------------------------------------------------------------------------------------------


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def build_stage(args, cfg, device: torch.device, workdir: Path):
    """The stage as `magworld train` builds it, with a random-weight autoencoder checkpoint."""
    ae_dir = random_checkpoints(cfg, workdir, ("autoencoder",))["autoencoder"]
    return construct_stage(args.stage, ["--autoencoder", str(ae_dir), "--clip-blocks", str(args.clip_blocks),
                                        "--compile", args.compile], cfg, args.batch_size, device, workdir)


def run(args: argparse.Namespace) -> int:
    if args.stage == "autoencoder":  # a conv net on frames: its own rows, no reference transformer
        return bench_train_autoencoder.run(args)
    if args.stage in bench_train_self_forcing.STAGES:  # a rollout and two score models: timed by phase
        return bench_train_self_forcing.run(args)
    device = torch.device(args.device)
    cfg = apply_overrides(preset(args.preset), args.set)
    m = cfg.model
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        stage = build_stage(args, cfg, device, Path(tmp))
        frames = stage.clip_frames
        batch = random_latent_batches(m, frames, args.batch_size, stage.network.action_scale, device)
        step_index = [0]

        def stage_step():
            stage.train_step(batch(), step_index[0])
            step_index[0] += 1

        mask = stage.mask
        seconds = timed(stage_step, args.warmup, args.steps, device)
        peak = peak_gb(device)
        profiled = gpu_profile(stage_step, 5, device) if args.profile and device.type == "cuda" else None
        params = sum(p.numel() for p in stage.network.parameters())
        del stage
    flops = step_flops(cfg, args.batch_size, frames, mask)
    tokens = args.batch_size * 2 * frames * m.tokens_per_frame
    rows = [{"run": f"magworld {args.stage}", "params_M": params / 1e6, "steps_per_s": 1 / seconds,
             "tokens_per_s": tokens / seconds, "tflops": flops / seconds / 1e12, "peak_gb": peak}]
    if not args.no_reference:
        rows.append(_reference_row(args, cfg, device, mask, frames, tokens, flops))
    result = {
        "machine": describe(str(device)), "stage": args.stage, "preset": args.preset,
        "batch": f"{args.batch_size} clips x {frames} frames ([clean ; noisy]: {2 * frames} frames x "
                 f"{m.tokens_per_frame} tokens = {tokens} tokens/step)",
        "dim x layers": f"{m.dim} x {m.layers} (heads {m.heads}, ffn {m.ffn_dim})",
        "rows": rows,
    }
    if len(rows) == 2:
        result["ratio_to_reference"] = rows[0]["steps_per_s"] / rows[1]["steps_per_s"]
    if profiled is not None:
        result["profile"] = profiled
    _print(result)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _reference_row(args, cfg, device, mask, frames, tokens, flops) -> dict:
    from worldmodel.model.masks import expand_to_tokens, flex_block_mask

    m = cfg.model
    patch = m.patch[1] * m.patch[2] * m.latent_channels
    torch.manual_seed(0)
    net = ReferenceTransformer(patch, m.dim, m.heads, m.layers, m.ffn_dim).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    fwd = torch.compile(net) if compile_on else net
    n = m.tokens_per_frame
    token_mask = flex_block_mask(mask, n) if device.type == "cuda" else expand_to_tokens(mask, n)
    length = 2 * frames * n
    bank = [torch.randn(args.batch_size, length, patch, device=device) for _ in range(4)]
    i = [0]

    def step():
        x = bank[i[0] % 4]
        i[0] += 1
        with _autocast(device):
            loss = (fwd(x, token_mask).float() - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    seconds = timed(step, args.warmup, args.steps, device)
    return {"run": "reference transformer", "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
            "steps_per_s": 1 / seconds, "tokens_per_s": tokens / seconds, "tflops": flops / seconds / 1e12,
            "peak_gb": peak_gb(device)}


def _print(result: dict) -> None:
    print(f"bench train: {result['stage']} at {result['preset']}, {result['dim x layers']}")
    print(f"  batch: {result['batch']}")
    print(f"  machine: {result['machine']}")
    print(f"  {'run':<24} {'params':>8} {'steps/s':>9} {'tokens/s':>11} {'TFLOP/s':>9} {'peak GB':>8}")
    for r in result["rows"]:
        peak = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "-"
        print(f"  {r['run']:<24} {r['params_M']:>7.2f}M {r['steps_per_s']:>9.2f} {r['tokens_per_s']:>11.3g} "
              f"{r['tflops']:>9.1f} {peak:>8}")
    if "ratio_to_reference" in result:
        print(f"  magworld / reference steps/s: {result['ratio_to_reference']:.2f}")
    if "profile" in result:
        print_profile(result["profile"], f"magworld {result['stage']}, profiled")
