"""Long memories for stage 2 without long rollouts: a slot table and sampled sub-histories of it.

At inference the generator reads up to `capacity` slots; a rollout of that many blocks per
training step would cost `capacity` times a short one. Instead the frames before the trained clip
(the *history*, real frames of the same episode, as a session's observed past is) are written by
the frozen memory model in one forward under the `memory_write` mask (no gradient): one slot per
block, keys rotated to their absolute frames. Each step then keeps a random subset of those
slots — sometimes all of them, sometimes few — so the generator learns to read anything from an
empty memory to a full one, as it meets under `mag` (a budget), `mag (all slots)` and a young
session. The newest slots are always kept, as retrieval always keeps the recent half.

Shapes: latents [b, H*B, C, h, w], actions [b, H*B, A], positions [H*B] (on the host); a SlotTable holds
k, v [layers, b, S, N, heads, head_dim] (the KVMemory layout) and frames [S] (each slot's frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from worldmodel.transfer import to_device_nowait


@dataclass
class SlotTable:
    """Compressed slots of a history, oldest first (what KVMemory.write takes)."""

    k: torch.Tensor  # [layers, b, S, N, heads, head_dim], post-RoPE
    v: torch.Tensor  # same
    frames: np.ndarray  # [S] int64 absolute frame index held by each slot

    @property
    def slots(self) -> int:
        return len(self.frames)

    def select(self, keep: np.ndarray) -> "SlotTable":
        """The slots `keep` (indices into this table, ascending)."""
        keep = np.asarray(keep, np.int64)
        if np.array_equal(keep, np.arange(self.slots)):  # every slot (--history-full-prob): no copy
            return self
        idx = to_device_nowait(torch.from_numpy(keep), self.k.device)
        return SlotTable(self.k.index_select(2, idx), self.v.index_select(2, idx), self.frames[keep])


@torch.no_grad()
def build_slot_table(writer, latents: torch.Tensor, actions: torch.Tensor, positions: torch.Tensor,
                     mask: torch.Tensor, autocast) -> SlotTable:
    """Every block's slot from one clean pass of the memory model `writer` over the history.

    mask: `masks.memory_write(H*B, B, window)` (what each block sees of the earlier slots); the
    pass runs with the empty condition, as the memory model writes at inference."""
    b, f = latents.shape[:2]
    bf = writer.cfg.block_frames
    positions = torch.as_tensor(positions)
    if f % bf or positions.shape != (f,):
        raise ValueError(f"history of {f} frames at {list(positions.shape)} positions: want whole blocks of {bf}")
    if positions.device.type != "cpu":
        # the slots' frames are read from them; reading them off the device would stop the
        # training step until the GPU caught up
        raise ValueError(f"positions must be a host tensor, got one on {positions.device}")
    t0 = torch.zeros(b, f, device=latents.device)
    with autocast():
        _, kvs = writer(latents, t0, actions, to_device_nowait(positions, latents.device), frame_mask=mask,
                        return_kv=True, validate=False)
    # the last frame of each block: a strided view, so no index tensor has to reach the device
    k = torch.stack([kv[0][:, bf - 1::bf] for kv in kvs]).float()
    v = torch.stack([kv[1][:, bf - 1::bf] for kv in kvs]).float()
    return SlotTable(k, v, positions[bf - 1::bf].numpy().astype(np.int64))


def sample_sub_history(slots: int, recent: int, full_prob: float) -> np.ndarray:
    """Indices (ascending) of the slots a training step keeps, from torch's global RNG (so a
    resumed run draws the same): all `slots` with probability `full_prob`, else k ~ U{0..slots}
    of them — the newest min(k, recent), the rest drawn uniformly from the older ones."""
    if slots == 0 or float(torch.rand(())) < full_prob:
        return np.arange(slots)
    k = int(torch.randint(0, slots + 1, ()))
    newest = min(k, recent)
    older = torch.randperm(slots - newest)[: k - newest].numpy()
    return np.sort(np.concatenate([older, np.arange(slots - newest, slots)])).astype(np.int64)
