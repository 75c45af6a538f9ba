"""MemoryStrategy: what a finished block leaves in memory, where, and what is attended.

A strategy answers three questions, each a small method:
  kept_frames()            which frames of a finished block are stored (indices into the block)
  choose_slots(memory, frames) which slots receive them (free slots first; else the strategy's
                           documented eviction: the slot is overwritten in the same atomic write)
  attend_slots(memory, pose) which slots the next block attends to (None = every slot, masked)
and names who computes the stored K/V: the generator itself, or a separate memory model (MAG),
and whether a SemanticPack state ψ is kept beside the K/V (`memorypack`).
"""

from __future__ import annotations

import numpy as np
import torch

from worldmodel.config import MemoryConfig
from worldmodel.memory.kv_memory import KVMemory, KVMemoryError


class MemoryStrategy:
    name = "base"
    writer = "generator"  # or "memory_model"
    semantic_state = False  # True: Rollout keeps a SemanticPack state ψ, read as cross-attention context

    def __init__(self, cfg: MemoryConfig, block_frames: int):
        self.cfg = cfg
        self.block_frames = block_frames

    def kept_frames(self) -> list[int]:
        raise NotImplementedError

    @property
    def frames_per_slot(self) -> float | None:
        """Frames of history one written slot stands for (mag: the block, B; full/window: 1;
        None: nothing is written). A full cache of the same history needs this many times the slots."""
        kept = len(self.kept_frames())
        return self.block_frames / kept if kept else None

    def capacity_needed(self) -> int:
        """Smallest capacity one block's write needs."""
        return len(self.kept_frames())

    def min_capacity(self) -> int:
        """Smallest capacity with which every write succeeds however long the session runs, as
        the eviction rule of choose_slots makes it (capacity_needed() only covers one block).
        The runtime refuses smaller capacities at `reset`; nothing here changes what is stored."""
        return self.capacity_needed()

    def capacity_error(self, capacity: int) -> str | None:
        """Why `capacity` slots cannot work for this strategy, or None when they can."""
        need = self.min_capacity()
        if capacity < need:
            return f"strategy {self.name!r} needs a capacity of at least {need} slots, got {capacity}"
        return None

    def choose_slots(self, memory: KVMemory, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots for new frames (absolute indices `frames`) and whether each is a sink.
        Default: free slots, then the oldest non-sink slots; no sinks."""
        n = len(frames)
        free = memory.free_slots()
        if len(free) >= n:
            return free[:n], np.zeros(n, dtype=bool)
        used = memory.used_slots()
        victims = used[~memory.sink[used]][: n - len(free)]
        if len(free) + len(victims) < n:
            raise KVMemoryError(f"memory of {memory.capacity} slots has no room for {n} frames (all sinks)")
        return np.concatenate([free, victims]), np.zeros(n, dtype=bool)

    def attend_slots(self, memory: KVMemory, pose=None):
        return None

    def steady_slots(self, capacity: int) -> int:
        """How many slots each block attends once a long session has filled a memory of
        `capacity` slots (here every held slot: the capacity; 0 when nothing is kept). The
        cudagraph backend captures its batched graphs for this many ahead of time
        (runtime/backends/graph_batch.py)."""
        return capacity if self.kept_frames() else 0

    def write_block(self, memory: KVMemory, kvs, frame_pos, poses=None) -> np.ndarray:
        """Store the kept frames of a finished block.

        kvs: list over layers of (k, v), each [B, Bf, N, heads, head_dim]
        frame_pos: [Bf] absolute frame indices; poses: [B, Bf, pose_dim] or None.
        Returns the slots written (empty if the strategy keeps nothing).
        """
        plan = self.plan_block(memory, kvs, frame_pos, poses)
        if plan is None:
            return np.zeros(0, dtype=np.int64)
        memory.commit(plan)
        return plan.slots

    def plan_block(self, memory: KVMemory, kvs, frame_pos, poses=None):
        """Everything of write_block short of writing: the slots chosen and the write checked
        (a WritePlan for memory.commit), or None when the strategy keeps nothing. Raises what
        write_block would raise, with the memory untouched, so a batch of sessions can be
        checked whole before any of them is written (worldmodel/rollout_batch.py)."""
        keep = self.kept_frames()
        if not keep:
            return None
        if memory.capacity < self.capacity_needed():
            raise KVMemoryError(
                f"strategy {self.name!r} needs at least {self.capacity_needed()} slots, memory has {memory.capacity}"
            )
        bf = kvs[0][0].shape[1]
        if bf != self.block_frames:
            raise KVMemoryError(f"a block has {self.block_frames} frames, got {bf}")
        # Index the kept frames with a slice where they are contiguous (every strategy here): a
        # Python list as an index becomes a host tensor copied to the device, which waits for it.
        sel = slice(keep[0], keep[-1] + 1) if list(keep) == list(range(keep[0], keep[-1] + 1)) else keep
        k = torch.stack([kv[0][:, sel] for kv in kvs])
        v = torch.stack([kv[1][:, sel] for kv in kvs])
        frames = np.asarray(torch.as_tensor(frame_pos).cpu())[keep]
        p = None
        if poses is not None:
            p = (poses.detach().cpu().numpy() if isinstance(poses, torch.Tensor) else np.asarray(poses))[:, keep]
        slots, sink = self.choose_slots(memory, frames)
        return memory.check_write(slots, k, v, frames, p, sink)
