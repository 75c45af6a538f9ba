"""`magworld bench train --stage autoencoder`: training steps per second of the frame autoencoder.

The stage is built exactly as `magworld train autoencoder` builds it (autoencoder, optimizer,
EMA, bf16 autocast on CUDA and, with --adv-weight > 0, the PatchGAN discriminator with its own
step and the adaptive weight) and fed batches of random uint8 frames gathered on the device,
so that the figure is the GPU's, not the loader's (which the dataset's own benchmark covers).

One row per memory layout (`--layouts`): `default` trains as `magworld train` does now; the
frames arrive channels-last (a permute of the stored [H, W, 3]) while the weights are
contiguous, so cuDNN picks a layout per convolution; `channels-last` (`--channels-last` on `train
autoencoder`) keeps weights and activations NHWC throughout.

FLOPs are counted, not estimated: torch.utils.flop_counter over one whole training step
(forward, backward, the discriminator's step), then divided by the timed seconds per step.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from worldmodel.bench_stage import construct_stage, peak_gb, timed
from worldmodel.config import apply_overrides, preset
from worldmodel.machine import describe

LAYOUTS = ("default", "channels-last")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adv-weight", type=float, default=0.5,
                   help="stage autoencoder: adversarial weight; 0 leaves the discriminator out (default 0.5, "
                        "as scripts/gpu/session_ae_gan.sh)")
    p.add_argument("--layouts", default="default,channels-last",
                   help=f"stage autoencoder: comma-separated memory layouts to time, of {', '.join(LAYOUTS)}")


def build_stage(args, cfg, device: torch.device, workdir: Path, channels_last: bool):
    """The autoencoder stage as `magworld train autoencoder` builds it, from random weights."""
    argv = ["--adv-weight", str(args.adv_weight)] + (["--channels-last"] if channels_last else [])
    return construct_stage("autoencoder", argv, cfg, args.batch_size, device, workdir)


def layouts(spec: str) -> list[str]:
    chosen = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in LAYOUTS]
    if unknown or not chosen:
        raise ValueError(f"--layouts: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(LAYOUTS)}")
    return chosen


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    cfg = apply_overrides(preset(args.preset), args.set)
    a = cfg.autoencoder
    try:
        chosen = layouts(args.layouts)
    except ValueError as e:
        raise SystemExit(f"magworld bench train: {e}") from None
    rows = []
    for layout in chosen:
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            stage = build_stage(args, cfg, device, Path(tmp), channels_last=layout == "channels-last")
            frames = stage.clip_frames
            bank = torch.randint(0, 256, (256, frames, a.frame_height, a.frame_width, 3), dtype=torch.uint8,
                                 device=device)
            step_index = [0]

            def step():
                rows_ = torch.randint(len(bank), (args.batch_size,), device=device)
                stage.train_step({"frames": bank[rows_]}, step_index[0])
                step_index[0] += 1

            step()  # first call outside the count: cuDNN's algorithm search
            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
            seconds = timed(step, args.warmup, args.steps, device)
            peak = peak_gb(device)
            params = sum(p.numel() for p in stage.autoencoder.parameters())
            if stage.discriminator is not None:
                params += sum(p.numel() for p in stage.discriminator.parameters())
            del stage
        n = args.batch_size * frames
        rows.append({"run": f"autoencoder, {layout}", "params_M": params / 1e6, "steps_per_s": 1 / seconds,
                     "frames_per_s": n / seconds, "tflops": flops / seconds / 1e12, "gflop_per_step": flops / 1e9,
                     "peak_gb": peak})
    result = {"machine": describe(str(device)), "stage": "autoencoder", "preset": args.preset,
              "batch": f"{args.batch_size} clips x {frames} frames = {n} frames of {a.frame_width}x{a.frame_height}",
              "adv_weight": args.adv_weight, "rows": rows}
    print(f"bench train: autoencoder at {args.preset} (base {a.base_channels} -> max {a.max_channels} channels, "
          f"adversarial weight {args.adv_weight})")
    print(f"  batch: {result['batch']}")
    print(f"  machine: {result['machine']}")
    print(f"  {'run':<28} {'params':>8} {'steps/s':>9} {'frames/s':>10} {'GFLOP/step':>11} {'TFLOP/s':>9} {'peak GB':>8}")
    for r in rows:
        peak = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "-"
        print(f"  {r['run']:<28} {r['params_M']:>7.2f}M {r['steps_per_s']:>9.2f} {r['frames_per_s']:>10.0f} "
              f"{r['gflop_per_step']:>11.0f} {r['tflops']:>9.1f} {peak:>8}")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
