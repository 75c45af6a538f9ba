"""The interface of a training stage, and the services the trainer gives every stage.

A stage owns its models, optimizers and loss; the trainer (`trainer.py`) owns the loop: data,
seeding, learning-rate warm-up, checkpoints, resume, time limit, logging. Names tie the pieces
together: `models()`, `optimizers()` and `emas()` use the same keys, and `models()[k]` is saved
as `<k>.safetensors` (the EMA weights when `emas()` has `k`).
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from worldmodel.config import WorldModelConfig
from worldmodel.train.distributed import DistInfo, is_dtensor, is_sharded, wrap_ddp, wrap_parallel
from worldmodel.train.ema import EMA


@dataclass
class TrainOptions:
    """Run-level settings (not model sizes: those are in WorldModelConfig)."""

    out: Path
    max_steps: int = 1000
    time_limit_min: float | None = None  # stop, checkpoint included, before this many minutes
    batch_size: int | None = None  # global (all processes); None: the stage's default
    lr: float | None = None  # None: the stage's default
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    ema_decay: float = 0.999
    warmup_steps: int = 100
    seed: int = 0
    resume: bool = False
    log_every: int = 10
    checkpoint_every_steps: int = 0  # 0: only by time
    checkpoint_every_min: float = 5.0
    autocast: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    parallel: str = "auto"  # several processes: "ddp", "fsdp", or "auto" (distributed.choose_parallel)
    val_every: int = 500  # with a held-out dataset (--val-data): steps between validations
    val_clips: int = 256  # held-out clips scored at each validation (whole batches)
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific arguments


class Stage:
    """Base class of training stages. Subclasses set `name` and implement the abstract methods."""

    name: ClassVar[str] = ""
    clip_frames: ClassVar[int] = 3  # frames per clip the stage wants from the dataset
    default_lr: ClassVar[float] = 1e-4
    default_batch_size: ClassVar[int] = 8  # global, in clips
    # Cost of `before_save(final=True)` in training-step equivalents, so the time limit leaves room.
    final_save_cost_steps: ClassVar[float] = 0.0

    def __init__(self, config: WorldModelConfig, options: TrainOptions, dist: DistInfo):
        self.config = config
        self.options = options
        self.dist = dist
        self.device = dist.device
        # make_dataset(clip_frames, seed) -> this rank's dataset; set by the trainer, for stages
        # that need data outside the training stream (e.g. statistics before a checkpoint).
        self.make_dataset = None

    # --- what a stage implements ----------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Stage-specific command-line options; their values arrive in `options.extra`."""

    def build(self) -> None:
        """Create models, optimizers and EMAs on `self.device`. Runs with the same seed on every rank."""
        raise NotImplementedError

    def models(self) -> dict[str, nn.Module]:
        """Modules to checkpoint, unwrapped (not DDP; FSDP modules are sharded in place), by name."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def emas(self) -> dict[str, EMA]:
        return {}

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float | torch.Tensor]:
        """One optimisation step on this rank's part of the batch; returns scalar metrics.

        `batch` holds the dataset's fields stacked on a leading batch axis, on `self.device`
        (e.g. frames uint8 [b, L, H, W, 3]). Return tensors rather than floats to avoid a device
        sync every step; the trainer averages them over the logging interval and over ranks.
        """
        raise NotImplementedError

    def before_save(self, final: bool) -> None:
        """Hook before each checkpoint (on every rank); `final` for the last one of a run.

        Must not consume the training data iterator or the global RNG streams, or resume would
        not be exact (use `torch.random.fork_rng` and a separate dataset).
        """

    # --- services for stages ----------------------------------------------------------------------

    @property
    def lr(self) -> float:
        return self.options.lr if self.options.lr is not None else self.default_lr

    @property
    def local_batch_size(self) -> int:
        total = self.options.batch_size or self.default_batch_size
        if total % self.dist.world_size:
            raise ValueError(f"--batch-size {total} is not divisible by the {self.dist.world_size} processes")
        return total // self.dist.world_size

    def ddp(self, module: nn.Module, **kwargs) -> nn.Module:
        return wrap_ddp(module, self.dist, **kwargs)

    def parallel(self, module: nn.Module) -> nn.Module:
        """DDP or FSDP by `--parallel` (see distributed.wrap_parallel); before building its optimizer and EMA."""
        bf16 = self.device.type == "cuda" and self.options.autocast
        return wrap_parallel(module, self.dist, self.options.parallel, bf16=bf16)

    def compiled(self, module: nn.Module) -> nn.Module:
        """`module` under torch.compile when `--compile` says so (auto: on CUDA). The weights stay
        those of `module`: checkpoints, EMA and optimizers use the uncompiled module."""
        return torch.compile(module) if self.compile_enabled() else module

    def compile_enabled(self) -> bool:
        """Whether `--compile` (auto: on CUDA) asks for torch.compile."""
        choice = self.options.extra.get("compile") or "auto"
        return choice == "on" or (choice == "auto" and self.device.type == "cuda")

    def adamw(self, module: nn.Module, **kwargs) -> torch.optim.Optimizer:
        """AdamW over `module`'s parameters: the fused CUDA kernel where it applies (one launch
        for all parameters instead of several per parameter), else the foreach version."""
        fused = self.device.type == "cuda" and not is_sharded(module)
        return torch.optim.AdamW(module.parameters(), fused=fused or None, **kwargs)

    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The stage's loss on one held-out batch, without training (`--val-data`; see
        validation.py). Called under torch.no_grad with a fixed seed. Stages that support it override
        this."""
        raise NotImplementedError(f"stage {self.name!r} has no validation loss (--val-data)")

    @classmethod
    def validates(cls) -> bool:
        return cls.validation_step is not Stage.validation_step

    def autocast(self):
        """bf16 autocast on CUDA (when enabled), nothing on CPU. Wrap forward passes, not backward."""
        if self.device.type == "cuda" and self.options.autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def optimize(self, loss: torch.Tensor, name: str) -> torch.Tensor:
        """Backward `loss`, clip, step optimizer `name`, update EMA `name` if any; returns the grad norm."""
        optimizer = self.optimizers()[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        max_norm = self.options.grad_clip if self.options.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        ema = self.emas().get(name)
        if ema is not None:
            ema.update(self.models()[name])
        if is_dtensor(norm):  # FSDP: the norm of all shards, the same on every rank
            norm = norm.full_tensor()
        return norm.detach()
