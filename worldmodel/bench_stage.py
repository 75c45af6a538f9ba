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
