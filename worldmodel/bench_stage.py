"""What `magworld bench train` shares between its stages: a stage built as `magworld train`
builds it, on one process, and the timer of its steps."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def construct_stage(name: str, argv: list[str], cfg, batch_size: int, device: torch.device, workdir: Path):
    """Stage `name` built as `magworld train NAME ARGV` builds it, on one process of `device`."""
    from worldmodel.train.distributed import DistInfo
    from worldmodel.train.stage import TrainOptions
    from worldmodel.train.stages import load_stage

    cls = load_stage(name)
    parser = argparse.ArgumentParser()
    cls.add_arguments(parser)
    options = TrainOptions(out=workdir / "run", batch_size=batch_size, extra=vars(parser.parse_args(argv)))
    stage = cls(cfg, options, DistInfo(rank=0, world_size=1, local_rank=0, device=device))
    stage.build()
    for opt in stage.optimizers().values():  # as the trainer's learning-rate schedule does
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])
    return stage


def random_latent_batches(model_cfg, frames: int, batch_size: int, action_scale: torch.Tensor,
                          device: torch.device, bank: int = 4096):
    """f() -> a batch as the latent cache gives one: latents float32 [batch, frames, C, h, w],
    actions [batch, frames, A] in physical units, scene [batch]. A bank of random latents and
    actions sits on the device; each call gathers its clips from it as LatentClips does
    (random rows, float16 -> float32), so the timing is the GPU's, not the loader's."""
    m = model_cfg
    latents = torch.randn(bank, m.latent_channels, m.latent_height, m.latent_width, device=device).half()
    actions = (torch.rand(bank, m.action_dim, device=device) * 2 - 1) * action_scale
    offsets = torch.arange(frames, device=device)

    def batch():
        rows = torch.randint(bank - frames, (batch_size,), device=device)[:, None] + offsets
        return {"latents": latents[rows].float(), "actions": actions[rows],
                "scene": torch.randint(max(m.num_scenes, 1), (batch_size,), device=device)}

    return batch


def timed(step, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per step (mean over `steps`, after `warmup` untimed steps)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / steps


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
