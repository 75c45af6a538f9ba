"""Several processes under `torchrun` (NCCL on CUDA, gloo on CPU), or one process without it.

Every helper here is a no-op, or the obvious identity, in a single process, so stages are written
once. torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.

Two ways to train one network on several processes (`wrap_parallel`):

    ddp    every rank holds the whole network, gradients are averaged (DistributedDataParallel)
    fsdp   every rank holds 1/N of each parameter, gradient and optimizer moment (FSDP2,
           `fully_shard`); whole weights exist only block by block, during forward and backward

Under FSDP a parameter is a DTensor shard. The EMA and the optimizer moments are elementwise, so
they are kept sharded the same way (`EMA(model)` after wrapping makes a sharded EMA). A checkpoint
holds whole tensors, exactly as a single process writes them: `full_state` gathers the shards
(every rank takes part, rank 0 keeps the result) and `shard_like` cuts a whole tensor back into
this rank's shard on load, so a checkpoint moves freely between one process, DDP and FSDP.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

PARALLEL_MODES = ("auto", "ddp", "fsdp")
# `auto` shards networks with at least this many trainable parameters (wan-1.3b's DiT, 1.4e9; the
# doom presets' are under 1e7). Replicated, training keeps ~20 bytes a parameter on every GPU (fp32
# weights, gradients, two AdamW moments, EMA) before activations: 6 GB here, where sharding starts to pay.
FSDP_AUTO_MIN_PARAMS = 300_000_000


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


def wrap_fsdp(module: nn.Module, info: DistInfo, bf16: bool = False) -> nn.Module:
    """`module` sharded over all processes with FSDP2: each of `module.blocks` (the transformer
    blocks), then the root (embeddings, head). Sharding is in place: the same object is returned,
    its parameters now DTensor shards, so build optimizers and EMAs after this call.

    bf16: compute with bf16 weights, reduce gradients in fp32 (the master weights stay fp32).
    A single process gets `module` back unchanged.
    """
    if not info.distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    policy = MixedPrecisionPolicy()
    if bf16:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in getattr(module, "blocks", ()):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(module, mesh=mesh, mp_policy=policy)
    return module


def choose_parallel(module: nn.Module, mode: str) -> str:
    """"ddp" or "fsdp" for `module` under `mode` ("auto": fsdp from FSDP_AUTO_MIN_PARAMS trainable parameters)."""
    if mode not in PARALLEL_MODES:
        raise ValueError(f"parallel mode {mode!r} is not one of {', '.join(PARALLEL_MODES)}")
    if mode != "auto":
        return mode
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return "fsdp" if trainable >= FSDP_AUTO_MIN_PARAMS else "ddp"


def wrap_parallel(module: nn.Module, info: DistInfo, mode: str = "auto", bf16: bool = False) -> nn.Module:
    """`module` made data-parallel by `mode` (see choose_parallel); itself in a single process.

    Run training forwards through the returned module and checkpoint `module` itself: DDP wraps
    it, FSDP shards it in place (see `unwrap`). bf16: FSDP's mixed precision (DDP leaves precision
    to autocast).
    """
    if choose_parallel(module, mode) == "fsdp":
        return wrap_fsdp(module, info, bf16=bf16)
    return wrap_ddp(module, info)


def is_dtensor(t: Any) -> bool:
    """True for an FSDP shard (a DTensor)."""
    # DTensors exist only once torch.distributed.tensor is loaded: inference need not pay its import.
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def is_sharded(module: nn.Module) -> bool:
    """True when `module` (or a part of it) is sharded by FSDP."""
    return any(is_dtensor(p) for p in module.parameters())


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers. FSDP2 shards a module in place, so
    an FSDP module is its own unwrapped self (its state dict then holds DTensor shards: `full_state`)."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def full_state(tree: Any, keep: bool = True) -> Any:
    """`tree` (a state dict, an optimizer's or EMA's state: nested dicts, lists, tuples) with every
    sharded tensor gathered whole, on CPU; other leaves are left as they are.

    Gathering is collective: under FSDP every rank must call this on the same structure. Ranks with
    `keep` false take part but get None back, so whole tensors pile up on one rank only.
    """

    def walk(o):
        if is_dtensor(o):
            whole = o.full_tensor()  # one tensor at a time on the device, then to CPU
            return whole.cpu() if keep else None
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return type(o)(walk(v) for v in o)
        return o

    out = walk(tree)
    return out if keep else None


def shard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`value`, a whole tensor, as `like` holds it: this rank's shard when `like` is a DTensor."""
    if is_dtensor(like):
        from torch.distributed.tensor import distribute_tensor

        # Every rank holds the whole value (all read the checkpoint): cut locally, no scatter.
        return distribute_tensor(value.to(like.device), like.device_mesh, like.placements, src_data_rank=None)
    return value


def load_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """`module.load_state_dict` from whole tensors, also when `module` is sharded by FSDP."""
    own = module.state_dict()
    module.load_state_dict({k: shard_like(v, own[k]) if k in own else v for k, v in state.items()})


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """`optimizer.load_state_dict` from whole tensors, also when its parameters are FSDP shards.

    Per-parameter state shaped like its parameter (moments, momentum) is sharded like it; the
    rest (AdamW's `step` counter) is the same on every rank, as FSDP keeps it.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    per_param = {}
    for index, values in state["state"].items():
        p = params[int(index)]
        per_param[index] = {
            k: shard_like(v, p) if isinstance(v, torch.Tensor) and v.shape == p.shape else v for k, v in values.items()
        }
    optimizer.load_state_dict({**state, "state": per_param})


def same_on_all_ranks(value: int, device: torch.device | str = "cpu") -> int:
    """Rank 0's `value` on every rank (itself in one process).

    For random choices that decide how often a network runs: under FSDP every forward is
    collective, so all ranks must run it the same number of times.
    """
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


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
