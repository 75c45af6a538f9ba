"""Held-out validation during training (`--val-data DIR`).

A fixed set of clips from another dataset (the held-out maps) is drawn once, and every
`--val-every` steps the stage scores it with its own loss (`Stage.validation_step`) at fixed
noise, logged beside the training loss as `val_<metric>` in metrics.csv. A falling training loss
with a flat or rising `val_loss` says the model has begun to fit the training maps (more data
helps, not more steps); both falling says more steps still help on maps it never saw. Read the
trend, not the level: a stage may score validation differently from training (the teacher scores
its EMA weights with clean history, without the context noise half of its training clips get).

Nothing here draws from the training's random streams or moves its data position: every draw
runs under a forked RNG with a seed of its own, so exact resume stays exact.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

VAL_SEED = 1234  # the clips and the noise of every validation: the same at every step and run


def _forked(device: torch.device):
    """The global RNG streams (CPU, and the device's) restored on exit."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


class Validation:
    """`make_batches()` opens the held-out dataset as an iterator of batches on the device (the
    trainer's batcher); the first `clips` clips, in whole batches of `batch_size`, are kept."""

    def __init__(self, make_batches: Callable[[], Iterator[dict[str, torch.Tensor]]], clips: int, batch_size: int,
                 every: int, device: torch.device):
        if every < 1:
            raise ValueError(f"--val-every must be at least 1, got {every}")
        if clips < 1:
            raise ValueError(f"--val-clips must be at least 1, got {clips}")
        self.every = every
        self.device = device
        with _forked(device):
            torch.manual_seed(VAL_SEED)
            batches = make_batches()
            self.batches = [next(batches) for _ in range(-(-clips // batch_size))]

    def due(self, step: int) -> bool:
        return step % self.every == 0

    @torch.no_grad()
    def __call__(self, stage) -> dict[str, torch.Tensor]:
        """Mean of `stage.validation_step` over the kept batches, as {"val_<name>": 0-d tensor}."""
        sums: dict[str, torch.Tensor] = {}
        with _forked(self.device):
            for i, batch in enumerate(self.batches):
                torch.manual_seed(VAL_SEED + 1 + i)
                for k, v in stage.validation_step(batch).items():
                    v = v.detach().float()
                    sums[k] = sums[k] + v if k in sums else v
        return {f"val_{k}": v / len(self.batches) for k, v in sums.items()}
