"""The generic stage runner: data, seeding, warm-up, checkpoints, exact resume, time limit, logs.

Run directory (`--out`):

    metrics.csv        one row per logging step (see metrics_log.py)
    checkpoint/        the latest checkpoint (see checkpoint.py), replaced atomically

A run stops at `max_steps`, before `time_limit_min` (leaving room for the final checkpoint), or
on SIGTERM/SIGINT; it always ends with a checkpoint, so the next command can `--resume` it and
continue bit for bit (same weights, optimizer, EMA, RNG streams and data position).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from worldmodel.config import WorldModelConfig
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.distributed import (DistInfo, all_reduce_mean, any_rank, barrier, full_state,
                                          load_optimizer_state, seed_everything)
from worldmodel.train.ema import ema_weights
from worldmodel.train.metrics_log import MetricsLogger, Progress
from worldmodel.train.stage import Stage, TrainOptions
from worldmodel.train.validation import VAL_SEED, Validation
from worldmodel.transfer import to_device_nowait

# make_dataset(clip_frames, seed) -> this rank's dataset: an iterable of dicts with
# `state_dict()` / `load_state_dict()` (worldmodel.data.dataset.ClipDataset, SyntheticClips), or
# an object whose `next_batch(batch_size)` returns whole batches (worldmodel.data.latent_clips).
DatasetFactory = Callable[[int, int], Iterable[dict[str, Any]]]

CHECKPOINT_DIR = "checkpoint"
SAFETY_SECONDS = 5.0  # slack under the time limit for interpreter exit and filesystem flushes
FIRST_SAVE_GUESS_SECONDS = 10.0  # assumed cost of a checkpoint before one has been timed


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack a list of sample dicts into one dict of tensors with a leading batch axis."""
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], np.ndarray):
            out[key] = torch.from_numpy(np.stack(values))
        elif isinstance(values[0], (int, float, bool, np.generic)):
            out[key] = torch.tensor(values)
        # strings and other metadata are dropped: stages train on tensors
    return out


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch on the training device without waiting for the GPU (worldmodel/transfer.py), so the
    host goes on launching the next step while the GPU finishes the last."""
    return {k: to_device_nowait(v, device) for k, v in batch.items()}


class Batches:
    """Batches of `batch_size` samples from a resumable dataset, in the main process.

    No DataLoader workers: the dataset's `state_dict()` must describe exactly the samples handed
    out so far, which prefetching workers would break.
    """

    def __init__(self, dataset, batch_size: int):
        self.dataset = dataset
        self.batch_size = batch_size
        self._it = None

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if hasattr(self.dataset, "next_batch"):  # a dataset that batches by itself (LatentClips)
            return self.dataset.next_batch(self.batch_size)
        items = []
        restarted = False
        while len(items) < self.batch_size:
            if self._it is None:
                self._it = iter(self.dataset)
            try:
                items.append(next(self._it))
                restarted = False
            except StopIteration:  # a finite dataset starts its next epoch
                if restarted:
                    raise RuntimeError("the training dataset yielded no clips; check --data and --split") from None
                self._it, restarted = None, True
        return collate(items)

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)
        self._it = None


@dataclass
class RunResult:
    step: int
    reason: str  # "max_steps" | "time_limit" | "signal"
    metrics: dict[str, float]


class Trainer:
    def __init__(
        self,
        stage: Stage,
        make_dataset: DatasetFactory,
        options: TrainOptions,
        dist: DistInfo,
        start_time: float | None = None,
        progress: bool = True,
        make_val_dataset: DatasetFactory | None = None,
    ):
        """`start_time`: time.monotonic() when the command started, so the time limit counts setup.
        `make_val_dataset`: the held-out dataset scored every `options.val_every` steps (validation.py)."""
        self.stage = stage
        self.config: WorldModelConfig = stage.config
        self.options = options
        self.dist = dist
        self.start_time = time.monotonic() if start_time is None else start_time
        self.out = Path(options.out)
        self.checkpoint_dir = self.out / CHECKPOINT_DIR
        self.make_dataset = make_dataset
        stage.make_dataset = make_dataset
        self.make_val_dataset = make_val_dataset
        if make_val_dataset is not None and not stage.validates():
            raise ValueError(f"stage {stage.name!r} has no validation loss: leave out --val-data")
        self.validation: Validation | None = None
        self.show_progress = progress
        self.step = 0
        self._signalled = False
        self._save_seconds: float | None = None
        self._step_seconds: list[float] = []

    # --- setup ----------------------------------------------------------------------------------

    def _setup(self) -> None:
        o = self.options
        # Same seed on every rank while building, so all ranks start from identical weights;
        # then per-rank streams for noise.
        seed_everything(o.seed)
        self.stage.build()
        for opt in self.stage.optimizers().values():
            for group in opt.param_groups:
                group.setdefault("base_lr", group["lr"])
        seed_everything(o.seed, rank_offset=self.dist.rank)
        dataset = self.make_dataset(self.stage.clip_frames, o.seed)
        self.batches = Batches(dataset, self.stage.local_batch_size)
        if self.make_val_dataset is not None:
            size, device = self.stage.local_batch_size, self.dist.device
            self.validation = Validation(
                lambda: (to_device(b, device) for b in Batches(self.make_val_dataset(self.stage.clip_frames, VAL_SEED), size)),
                o.val_clips, size, o.val_every, device)

        has_checkpoint = True
        try:
            found = ckpt.resolve_checkpoint(self.checkpoint_dir)
        except ckpt.CheckpointError:
            has_checkpoint = False
        if has_checkpoint and not o.resume:
            raise FileExistsError(
                f"{self.out} already holds a checkpoint; pass --resume to continue it, or choose another --out"
            )
        if has_checkpoint:
            self._load(found)
        self.logger = MetricsLogger(self.out, enabled=self.dist.is_main)
        self.logger.truncate_after(self.step)

    def _load(self, directory: Path) -> None:
        ckpt.check_config(directory, self.config)
        shared, mine = ckpt.load_training_state(directory, self.dist.rank)
        if shared.get("stage") != self.stage.name:
            raise ckpt.CheckpointError(
                f"{directory} is a checkpoint of stage {shared.get('stage')!r}, not {self.stage.name!r}"
            )
        if shared["world_size"] != self.dist.world_size:
            raise ckpt.CheckpointError(
                f"{directory} was written by {shared['world_size']} processes; resume with the same number "
                f"(this run has {self.dist.world_size}) so that data positions and RNG streams carry over"
            )
        models, optimizers, emas = self.stage.models(), self.stage.optimizers(), self.stage.emas()
        for name, module in models.items():
            if name not in shared["models"]:
                raise ckpt.CheckpointError(f"{directory} has no training weights for model {name!r}")
            ckpt.load_into(module, {k: v.to(self.dist.device) for k, v in shared["models"][name].items()},
                           f"training weights {name!r} in {directory}")
        for name, opt in optimizers.items():
            load_optimizer_state(opt, shared["optimizers"][name])
        for name, ema in emas.items():
            ema.load_state_dict(shared["emas"][name])
        self.step = int(shared["step"])
        self.batches.load_state_dict(mine["data"])
        ckpt.restore_rng_state(mine["rng"])  # last: loading must not shift the streams

    # --- checkpoints ------------------------------------------------------------------------------

    def save(self, final: bool) -> None:
        """Write the checkpoint directory (all ranks take part; rank 0 writes the shared parts)."""
        t0 = time.monotonic()
        # Hooks and stage work must not disturb the streams that the next step will draw from.
        rng = ckpt.capture_rng_state()
        self.stage.before_save(final)
        ckpt.restore_rng_state(rng)
        main = self.dist.is_main
        # Whole tensors of every model, optimizer and EMA, as one process would hold them. Under
        # FSDP they are gathered shard by shard, every rank taking part; rank 0 keeps them.
        state = full_state({
            "models": {k: m.state_dict() for k, m in self.stage.models().items()},
            "optimizers": {k: o.state_dict() for k, o in self.stage.optimizers().items()},
            "emas": {k: e.state_dict() for k, e in self.stage.emas().items()},
        }, keep=main)
        staging = ckpt.staging_path(self.checkpoint_dir)
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.prepare_staging(self.checkpoint_dir)
            ckpt.save_config(staging, self.config)
            for name, weights in state["models"].items():
                if name in state["emas"]:
                    weights = ema_weights(state["emas"][name], weights)
                ckpt.save_weights(staging, name, weights)
        barrier()
        shared = None
        if main:
            shared = {
                "stage": self.stage.name,
                "step": self.step,
                "world_size": self.dist.world_size,
                "options": _jsonable(dataclasses.asdict(self.options)),
                **state,
            }
        ckpt.save_training_state(staging, shared, {"rng": rng, "data": self.batches.state_dict()}, self.dist.rank)
        barrier()
        if main:
            ckpt.commit_staging(self.checkpoint_dir)
        barrier()
        self._save_seconds = time.monotonic() - t0

    # --- the loop -------------------------------------------------------------------------------

    def _time_left_for_another_step(self) -> bool:
        limit = self.options.time_limit_min
        if limit is None:
            return True
        save_s = self._save_seconds if self._save_seconds is not None else FIRST_SAVE_GUESS_SECONDS
        reserve = self._step_reserve_seconds() + 1.5 * save_s + SAFETY_SECONDS
        return time.monotonic() - self.start_time + reserve < limit * 60

    def _step_reserve_seconds(self) -> float:
        """Seconds kept free for the steps still to come before the final save.

        A process's first step carries torch.compile's compilation and cuDNN's autotuning (over a
        minute on a GPU, against tens of milliseconds for the steps after it), so it never sets
        the pace once later steps have been timed; while it is the only one, one more step like
        it is reserved instead of two. (Before, a 70 s compiled first step reserved 140 s and a
        3.6-minute run stopped after that one step.)"""
        times = self._step_seconds
        if not times:
            return 0.0
        if len(times) == 1:
            return times[0] * (1 + self.stage.final_save_cost_steps)
        step_s = max(times[1:][-20:])
        return step_s * (2 + self.stage.final_save_cost_steps)

    def _set_lr(self) -> None:
        warm = self.options.warmup_steps
        factor = min(1.0, (self.step + 1) / warm) if warm > 0 else 1.0
        for opt in self.stage.optimizers().values():
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor

    def run(self) -> RunResult:
        self._setup()
        o = self.options
        previous = self._install_signal_handlers()
        progress = Progress(o.max_steps, initial=self.step, enabled=self.dist.is_main and self.show_progress,
                            desc=self.stage.name)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        held_out: dict[str, torch.Tensor] = {}
        last_metrics: dict[str, float] = {}
        last_save = time.monotonic()
        reason = "max_steps"
        try:
            while self.step < o.max_steps:
                stop = self._signalled or not self._time_left_for_another_step()
                due = (o.checkpoint_every_min > 0 and time.monotonic() - last_save > o.checkpoint_every_min * 60)
                flags = any_rank(stop, self.dist.device), any_rank(due, self.dist.device)
                if flags[0]:
                    reason = "signal" if self._signalled else "time_limit"
                    break
                t0 = time.monotonic()
                batch = to_device(next(self.batches), self.dist.device)
                self._set_lr()
                metrics = self.stage.train_step(batch, self.step)
                self.step += 1
                for k, v in metrics.items():
                    v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                    sums[k] = sums[k] + v if k in sums else v
                count += 1
                if self.validation is not None and self.validation.due(self.step):
                    held_out = self.validation(self.stage)  # logged in the next metrics row
                if self.step % o.log_every == 0 or self.step == o.max_steps:
                    last_metrics = self._log(sums, count, held_out)
                    sums, count, held_out = {}, 0, {}
                    progress.update(0, last_metrics)
                progress.update(1)
                self._step_seconds.append(time.monotonic() - t0)
                if flags[1] or (o.checkpoint_every_steps and self.step % o.checkpoint_every_steps == 0):
                    if self.step < o.max_steps:
                        self.save(final=False)
                        last_save = time.monotonic()
            if count:
                last_metrics = self._log(sums, count, held_out)
            self.save(final=True)
            if self.dist.is_main:
                progress.write(f"{self.stage.name}: stopped at step {self.step} ({reason}); checkpoint in {self.checkpoint_dir}")
        finally:
            progress.close()
            self.logger.close()
            self._restore_signal_handlers(previous)
        return RunResult(step=self.step, reason=reason, metrics=last_metrics)

    def _log(self, sums: dict[str, torch.Tensor], count: int,
             held_out: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """One metrics row: the means of `sums` over `count` steps, and the last validation."""
        means = {k: float(v.item()) / count for k, v in sums.items()}
        means.update({k: float(v.item()) for k, v in (held_out or {}).items()})
        means = all_reduce_mean(means, self.dist.device)
        for k, v in means.items():
            if not math.isfinite(v):
                raise FloatingPointError(
                    f"metric {k!r} became {v} by step {self.step}; the last good checkpoint is in {self.checkpoint_dir} "
                    "(lower --lr or raise warm-up before resuming)"
                )
        means["lr"] = next(iter(self.stage.optimizers().values())).param_groups[0]["lr"]
        means["elapsed_min"] = (time.monotonic() - self.start_time) / 60
        self.logger.log(self.step, means)
        return means

    # --- signals: a time-limited job gets SIGTERM before SIGKILL; checkpoint instead of dying ----

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            self._signalled = True

        return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def _restore_signal_handlers(self, previous) -> None:
        for s, h in (previous or {}).items():
            signal.signal(s, h)


def _jsonable(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if d is None or isinstance(d, (bool, int, float, str)):
        return d
    return str(d)
