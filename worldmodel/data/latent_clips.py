"""`LatentClips`: random block-aligned clips of cached latents, drawn on the training device.

The training stages over latents take their batches from here when a latent cache exists
(`worldmodel.data.latent_cache`): the split's latents, actions and poses are loaded once into
device memory (150,000 frames of 8x15x20 latents are 0.7 GB in float16), and each batch is one
gather (`worldmodel.data.device_clips`: clip starts, seeding and resume).

    next_batch(b) -> {"latents": float32 [b, L, C, h, w], "actions": float32 [b, L, A],
                      "poses": float32 [b, L, P], "scene": int64 [b]}, all on `device`
"""

from __future__ import annotations

import torch

from worldmodel.data import latent_cache
from worldmodel.data.device_clips import DeviceClips


class LatentClips(DeviceClips):
    key = "latents"
    kind = "latent-clips"

    def __init__(self, root, autoencoder_dir, clip_frames: int, block_frames: int = 3, split: str | None = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__(root, clip_frames, block_frames, split, rank, world_size, seed, device)
        latents, offsets = latent_cache.load(self.root, autoencoder_dir)  # float16 [N, C, h, w]

        def rows(ep):
            first = offsets[ep.shard.name] + ep.start
            return latents[first:first + ep.length]

        self._load(split, rows)

    def convert(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()
