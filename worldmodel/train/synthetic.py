"""A tiny deterministic clip dataset in memory, with ClipDataset's interface, for tests and smoke runs.

Each clip shows a smooth colour gradient with a few rectangles drifting across it: enough
structure for an autoencoder to learn in a few steps, cheap to generate, identical for a seed.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from worldmodel.actions import ACTION_DIM, POSE_DIM


class SyntheticClips:
    """Iterable of dicts like `worldmodel.data.dataset.ClipDataset`:

    frames uint8 [L, H, W, 3], actions float32 [L, ACTION_DIM], poses float32 [L, POSE_DIM],
    scene int64 (a 0-d tensor). Endless: epochs of `num_clips` clips in a seeded order, split
    across ranks (rank r takes every world_size-th clip). `state_dict()` is the position after the
    last clip yielded, so `load_state_dict` + `iter` continues exactly there.
    """

    def __init__(self, clip_frames: int, height: int, width: int, num_clips: int = 32, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_scenes: int = 4):
        if num_clips < world_size:
            raise ValueError(f"num_clips {num_clips} must be at least world_size {world_size}")
        self.clip_frames, self.height, self.width = clip_frames, height, width
        self.num_clips, self.seed, self.rank, self.world_size = num_clips, seed, rank, world_size
        self.num_scenes = num_scenes
        self.epoch = 0
        self.position = 0  # clips of this rank's share of `epoch` already yielded

    def clip(self, index: int) -> dict[str, Any]:
        """Clip `index` (deterministic in seed and index)."""
        rng = np.random.default_rng([self.seed, index])
        L, H, W = self.clip_frames, self.height, self.width
        y, x = np.mgrid[0:H, 0:W].astype(np.float32)
        c0, c1 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        base = c0 + (c1 - c0) * ((x / max(W - 1, 1) + y / max(H - 1, 1)) / 2)[..., None]
        frames = np.repeat(base[None], L, axis=0)
        for _ in range(3):
            h, w = rng.integers(2, max(3, H // 2)), rng.integers(2, max(3, W // 2))
            y0, x0 = rng.uniform(0, H - h), rng.uniform(0, W - w)
            vy, vx = rng.uniform(-2, 2, size=2)
            colour = rng.uniform(0, 255, size=3)
            for t in range(L):
                ty, tx = int(np.clip(y0 + vy * t, 0, H - h)), int(np.clip(x0 + vx * t, 0, W - w))
                frames[t, ty : ty + h, tx : tx + w] = colour
        return {
            "frames": torch.from_numpy(frames.round().clip(0, 255).astype(np.uint8)),
            "actions": torch.from_numpy(rng.uniform(-1, 1, size=(L, ACTION_DIM)).astype(np.float32)),
            "poses": torch.from_numpy(rng.normal(size=(L, POSE_DIM)).astype(np.float32)),
            "scene": torch.tensor(index % max(self.num_scenes, 1), dtype=torch.int64),
        }

    def _order(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, 1_000_000 + epoch]).permutation(self.num_clips)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            order = self._order(self.epoch)
            while self.position < len(order):
                index = int(order[self.position])
                self.position += 1  # before yielding: the state then counts this clip as handed out
                yield self.clip(index)
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["seed"], state["world_size"]) != (self.seed, self.world_size):
            raise ValueError(
                f"data position was saved for seed {state['seed']} over {state['world_size']} processes, "
                f"this dataset has seed {self.seed} over {self.world_size}"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
