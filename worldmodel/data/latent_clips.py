"""`LatentClips`: random block-aligned clips of cached latents, drawn on the training device.

The training stages over latents take their batches from here when a latent cache exists
(`worldmodel.data.latent_cache`): the split's latents, actions and poses are loaded once into
device memory (150,000 frames of 8x15x20 latents are 0.7 GB in float16), and each batch is one
gather, so the data path never idles the GPU.

    next_batch(b) -> {"latents": float32 [b, L, C, h, w], "actions": float32 [b, L, A],
                      "poses": float32 [b, L, P], "scene": int64 [b]}, all on `device`

Clips start at block-aligned frames of an episode and never cross its end (as ClipDataset's).
Starts are drawn uniformly with replacement; batch k of rank r comes from a generator seeded by
(seed, r, k), so the state is two integers and a resumed run draws exactly the batches that an
uninterrupted one would have drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldmodel.data import latent_cache
from worldmodel.data.dataset import episodes_of
from worldmodel.data.shards import open_arrays
from worldmodel.transfer import to_device_nowait


class LatentClips:
    def __init__(self, root, autoencoder_dir, clip_frames: int, block_frames: int = 3, split: str | None = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0, device: str | torch.device = "cpu"):
        if clip_frames <= 0 or clip_frames % block_frames:
            raise ValueError(f"clip_frames {clip_frames} must be a positive multiple of block_frames {block_frames}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        self.root, self.clip, self.block = Path(root), clip_frames, block_frames
        self.rank, self.seed, self.device = rank, seed, torch.device(device)
        latents, offsets = latent_cache.load(self.root, autoencoder_dir)
        lat, act, pose, starts, scenes = [], [], [], [], []
        row = 0
        for ep in episodes_of(self.root, split, clip_frames):
            first = offsets[ep.shard.name] + ep.start
            arrays = open_arrays(ep.shard)
            lat.append(np.asarray(latents[first:first + ep.length]))
            act.append(np.asarray(arrays["actions"][ep.start:ep.start + ep.length]))
            pose.append(np.asarray(arrays["poses"][ep.start:ep.start + ep.length]))
            k = np.arange(0, ep.length - clip_frames + 1, block_frames)
            starts.append(row + k)
            scenes.append(np.full(len(k), ep.scene, dtype=np.int64))
            row += ep.length
        self.latents = torch.from_numpy(np.concatenate(lat)).to(self.device)  # float16 [N, C, h, w]
        self.actions = torch.from_numpy(np.concatenate(act)).float().to(self.device)
        self.poses = torch.from_numpy(np.concatenate(pose)).float().to(self.device)
        self.starts = torch.from_numpy(np.concatenate(starts)).to(self.device)
        self.scenes = torch.from_numpy(np.concatenate(scenes)).to(self.device)
        self.offsets = torch.arange(clip_frames, device=self.device)
        self.batches = 0

    def __len__(self) -> int:
        """Distinct clip starts of the split."""
        return len(self.starts)

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed((self.seed << 40) ^ (self.rank << 32) ^ self.batches)
        # not waiting for the GPU (worldmodel/transfer.py): each step would wait for the last
        pick = to_device_nowait(torch.randint(len(self.starts), (batch_size,), generator=g), self.device)
        self.batches += 1
        rows = self.starts[pick][:, None] + self.offsets  # [b, L]
        return {"latents": self.latents[rows].float(), "actions": self.actions[rows], "poses": self.poses[rows],
                "scene": self.scenes[pick]}

    def state_dict(self) -> dict:
        return {"kind": "latent-clips", "seed": self.seed, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "latent-clips":
            raise ValueError("this checkpoint's data position is of the frame dataset, not of the latent cache: "
                             "resume with the same --latent-cache setting it was trained with")
        if int(state["seed"]) != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this dataset has seed {self.seed}")
        self.batches = int(state["batches"])
