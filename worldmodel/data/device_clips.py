"""`DeviceClips`: random block-aligned clips of a split held whole in device memory.

A training stage whose data fits on the device takes its batches from here, so that each batch is
one gather on the device and the data path never idles the GPU (a batch read from memory-mapped
shards in the training process, then copied over, left the autoencoder's GPU idle most of a step).
Two sources use it:
    worldmodel.data.latent_clips.LatentClips  the dataset's latent cache (latent stages)
    worldmodel.data.frame_clips.FrameClips    the frames themselves (the autoencoder stage)

    next_batch(b) -> {KEY: [b, L, ...] (the source's array, as `convert` makes it),
                      "actions": float32 [b, L, A], "poses": float32 [b, L, P], "scene": int64 [b]}

Clips start at block-aligned frames of an episode and never cross its end (as ClipDataset's).
Starts are drawn uniformly with replacement; batch k of rank r comes from a generator seeded by
(seed, r, k), so the state is two integers and a resumed run draws exactly the batches that an
uninterrupted one would have drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from worldmodel.data.dataset import episodes_of
from worldmodel.data.shards import Episode, open_arrays
from worldmodel.transfer import to_device_nowait


class DeviceClips:
    key = ""  # the batch key of the source's array
    kind = ""  # state_dict kind, so a checkpoint's data position is not resumed on another source

    def __init__(self, root, clip_frames: int, block_frames: int = 3, split: str | None = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0, device: str | torch.device = "cpu"):
        if clip_frames <= 0 or clip_frames % block_frames:
            raise ValueError(f"clip_frames {clip_frames} must be a positive multiple of block_frames {block_frames}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        self.root, self.clip, self.block = Path(root), clip_frames, block_frames
        self.rank, self.seed, self.device = rank, seed, torch.device(device)
        self.batches = 0

    def _load(self, split: str | None, rows_of: Callable[[Episode], np.ndarray]) -> None:
        """Gather every episode of `split` long enough for a clip: rows_of(ep) gives its array
        [ep.length, ...] (a memory-mapped slice); the episodes are copied one by one into one
        tensor on the device, so the host never holds the split twice."""
        episodes = episodes_of(self.root, split, self.clip)
        first = np.array(rows_of(episodes[0])[:1])  # a copy: memory-mapped arrays are read-only
        self.data = torch.empty((sum(ep.length for ep in episodes), *first.shape[1:]),
                                dtype=torch.from_numpy(first).dtype, device=self.device)
        act, pose, starts, scenes = [], [], [], []
        row = 0
        for ep in episodes:
            arrays = open_arrays(ep.shard)
            self.data[row:row + ep.length] = torch.from_numpy(np.array(rows_of(ep)))
            act.append(np.asarray(arrays["actions"][ep.start:ep.start + ep.length]))
            pose.append(np.asarray(arrays["poses"][ep.start:ep.start + ep.length]))
            k = np.arange(0, ep.length - self.clip + 1, self.block)
            starts.append(row + k)
            scenes.append(np.full(len(k), ep.scene, dtype=np.int64))
            row += ep.length
        self.actions = torch.from_numpy(np.concatenate(act)).float().to(self.device)
        self.poses = torch.from_numpy(np.concatenate(pose)).float().to(self.device)
        self.starts = torch.from_numpy(np.concatenate(starts)).to(self.device)
        self.scenes = torch.from_numpy(np.concatenate(scenes)).to(self.device)
        self.offsets = torch.arange(self.clip, device=self.device)

    def convert(self, x: torch.Tensor) -> torch.Tensor:
        """The gathered rows [b, L, ...] as the stage takes them (identity by default)."""
        return x

    def __len__(self) -> int:
        """Distinct clip starts of the split."""
        return len(self.starts)

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed((self.seed << 40) ^ (self.rank << 32) ^ self.batches)
        # not waiting for the GPU (worldmodel/transfer.py): each step would wait for the last
        pick = to_device_nowait(torch.randint(len(self.starts), (batch_size,), generator=g), self.device)
        self.batches += 1
        rows = self.starts[pick][:, None] + self.offsets  # [b, L]
        return {self.key: self.convert(self.data[rows]), "actions": self.actions[rows], "poses": self.poses[rows],
                "scene": self.scenes[pick]}

    def state_dict(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"this checkpoint's data position is of {state.get('kind') or 'the frame dataset'}, not "
                             f"of {self.kind}: resume with the same data settings (--latent-cache, "
                             "--frames-on-device) it was trained with")
        if int(state["seed"]) != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this dataset has seed {self.seed}")
        self.batches = int(state["batches"])
