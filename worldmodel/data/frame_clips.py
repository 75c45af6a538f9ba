"""`FrameClips`: random block-aligned clips of the dataset's frames, held whole on the device.

The autoencoder stage trains on frames, not latents. Read from memory-mapped shards in the
training process and copied over per batch, they left an H200 idle most of a step (session 14:
2.2 steps/s per run, against 14 in `bench train --stage autoencoder` with frames already on the
device). 150,000 frames of 160x120 RGB are 8.6 GB of uint8, well inside a GPU's memory, so the
split is loaded once and each batch is one gather (`worldmodel.data.device_clips`: clip starts,
seeding and resume).

    next_batch(b) -> {"frames": uint8 [b, L, H, W, 3], "actions": float32 [b, L, A],
                      "poses": float32 [b, L, P], "scene": int64 [b]}, all on `device`

Instances over the same data, split and device share one copy of the frames (the stage's
latent statistics draw from a second dataset beside the training one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldmodel.data.dataset import episodes_of
from worldmodel.data.device_clips import DeviceClips
from worldmodel.data.shards import open_arrays

# (root, split, clip_frames, block_frames, device) -> the loaded tensors of a FrameClips
_SHARED: dict[tuple, dict[str, torch.Tensor]] = {}
_FIELDS = ("data", "actions", "poses", "starts", "scenes", "offsets")


def frames_bytes(root, split: str | None, clip_frames: int) -> int:
    """Bytes the frames of `split` take on the device (episodes of at least `clip_frames`)."""
    total = 0
    for ep in episodes_of(Path(root), split, clip_frames):
        frame = open_arrays(ep.shard)["frames"]
        total += ep.length * int(np.prod(frame.shape[1:])) * frame.dtype.itemsize
    return total


class FrameClips(DeviceClips):
    key = "frames"
    kind = "frame-clips"

    def __init__(self, root, clip_frames: int, block_frames: int = 3, split: str | None = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__(root, clip_frames, block_frames, split, rank, world_size, seed, device)
        key = (str(self.root.resolve()), split, clip_frames, block_frames, str(self.device))
        if key not in _SHARED:
            self._load(split, lambda ep: open_arrays(ep.shard)["frames"][ep.start:ep.start + ep.length])
            _SHARED[key] = {f: getattr(self, f) for f in _FIELDS}
        for f in _FIELDS:
            setattr(self, f, _SHARED[key][f])
