"""Several processes under `torchrun` (NCCL on CUDA, gloo on CPU), or one process without it.

Every helper here is a no-op, or the obvious identity, in a single process, so stages are written
once. torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group if there is one; pick this process's device.

    `device`: "cpu", "cuda", or None (CUDA when available). Under torchrun with CUDA, each
    process uses cuda:LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but this machine has no CUDA device visible to torch")
    dev = torch.device(f"cuda:{local_rank}") if kind == "cuda" else torch.device(kind)
    if kind == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def current() -> DistInfo:
    """DistInfo of this process as the process group sees it (rank 0 of 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), torch.device("cpu"))
    return DistInfo(0, 1, 0, torch.device("cpu"))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int, rank_offset: int = 0) -> None:
    """Seed python, numpy and torch. Pass the rank as offset for streams that must differ per rank
    (noise, dropout); model initialisation should use offset 0 so every rank starts identical."""
    s = seed + 1_000_003 * rank_offset
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def wrap_ddp(module: nn.Module, info: DistInfo, **kwargs) -> nn.Module:
    """DistributedDataParallel around `module` when there are several processes, else `module`."""
    if not info.distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, **kwargs)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def all_reduce_mean(metrics: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean of each metric over processes (identity in one process). Every rank must pass the same keys."""
    if world_size() == 1 or not metrics:
        return dict(metrics)
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= world_size()
    return dict(zip(keys, t.tolist()))


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank if `flag` is true on any rank (so all ranks stop on the same step)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
