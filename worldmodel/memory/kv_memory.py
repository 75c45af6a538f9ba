"""KVMemory: the one place that owns the KV cache.

Preallocated, fixed-capacity buffers (static shapes for CUDA graphs, ONNX and TensorRT):

    k, v:  [layers, batch, capacity, N, heads, head_dim]   keys stored post-RoPE
    slot table (host side, one entry per slot, shared by the batch):
        frame    [capacity] int64   absolute frame index held, -1 = empty
        pose     [batch, capacity, pose_dim] float32   camera pose when written
        written  [capacity] int64   write order (a counter), for age-based eviction
        sink     [capacity] bool    never evicted
    valid: [capacity] bool on the device, mirrors `frame >= 0` for the attention mask.

Keys carry their absolute position, so slot order does not matter: any slot may be reused.
Writes are validated before any buffer is touched, so a bad write leaves the memory as it was.
The finiteness check of the written K/V waits for the device (a host-device synchronisation per
write); a training rollout, whose K/V come from the network being trained, turns it off
(`check_values=False`). Writes and views of a run of consecutive slots slice the buffers rather
than index them, so they send no index tensor to the device either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from worldmodel.config import ModelConfig
from worldmodel.model.dit import MemoryView
from worldmodel.transfer import to_device_nowait


class KVMemoryError(ValueError):
    """A write or read the memory cannot honour (bad shape, no room, non-finite values)."""


@dataclass
class WritePlan:
    """A write that KVMemory.check_write has validated; KVMemory.commit stores it."""

    slots: np.ndarray  # [n] int64
    k: torch.Tensor  # [layers, batch, n, N, heads, head_dim]
    v: torch.Tensor
    frames: np.ndarray  # [n] int64
    poses: np.ndarray  # [batch, n, pose_dim] float32
    sink: np.ndarray | bool


class KVMemory:
    def __init__(
        self,
        cfg: ModelConfig,
        capacity: int,
        batch: int = 1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        check_values: bool = True,
    ):
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.cfg = cfg
        self.capacity = capacity
        self.batch = batch
        self.check_values = check_values
        shape = (cfg.layers, batch, capacity, cfg.tokens_per_frame, cfg.heads, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.frame = np.full(capacity, -1, dtype=np.int64)
        self.pose = np.zeros((batch, capacity, cfg.pose_dim), dtype=np.float32)
        self.written = np.full(capacity, -1, dtype=np.int64)
        self.sink = np.zeros(capacity, dtype=bool)
        self._counter = 0
        self.evictions = 0

    # ---------------------------------------------------------------- bookkeeping

    @property
    def device(self) -> torch.device:
        return self.k.device

    def used_slots(self) -> np.ndarray:
        """Indices of occupied slots, oldest write first."""
        used = np.flatnonzero(self.frame >= 0)
        return used[np.argsort(self.written[used], kind="stable")]

    def free_slots(self) -> np.ndarray:
        return np.flatnonzero(self.frame < 0)

    @property
    def num_used(self) -> int:
        return int((self.frame >= 0).sum())

    @property
    def bytes_per_slot(self) -> int:
        per = self.k[:, :, 0].numel() * self.k.element_size()
        return 2 * per

    def bytes_held(self) -> int:
        """Bytes of K/V that hold data now."""
        return self.num_used * self.bytes_per_slot

    def bytes_allocated(self) -> int:
        return self.capacity * self.bytes_per_slot

    def clear(self) -> None:
        self.frame[:] = -1
        self.written[:] = -1
        self.sink[:] = False
        self.pose[:] = 0
        self.valid.zero_()
        self._counter = 0
        self.evictions = 0

    def evict(self, slots) -> None:
        slots = np.asarray(slots, dtype=np.int64)
        if len(slots) == 0:
            return
        self.evictions += int((self.frame[slots] >= 0).sum())
        self.frame[slots] = -1
        self.written[slots] = -1
        self.sink[slots] = False
        self.valid[torch.as_tensor(slots, device=self.device)] = False

    # ---------------------------------------------------------------- write / read

    def write(
        self,
        slots,
        k: torch.Tensor,
        v: torch.Tensor,
        frames,
        poses: torch.Tensor | np.ndarray | None = None,
        sink=None,
    ) -> None:
        """Store n frames' K/V into the given slots (overwriting whatever they held).

        slots:  n distinct slot indices
        k, v:   [layers, batch, n, N, heads, head_dim]
        frames: n absolute frame indices
        poses:  [batch, n, pose_dim] or None (zeros)
        sink:   n bools, or None (False)
        """
        self.commit(self.check_write(slots, k, v, frames, poses, sink))

    def check_write(self, slots, k, v, frames, poses=None, sink=None) -> WritePlan:
        """Validate a write (arguments as `write`) without touching any buffer."""
        slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        n = len(slots)
        want = (self.cfg.layers, self.batch, n, self.cfg.tokens_per_frame, self.cfg.heads, self.cfg.head_dim)
        if n > self.capacity:
            raise KVMemoryError(f"cannot write {n} frames into a memory of {self.capacity} slots")
        if len(frames) != n:
            raise KVMemoryError(f"got {n} slots but {len(frames)} frame indices")
        if len(set(slots.tolist())) != n or (n and (slots.min() < 0 or slots.max() >= self.capacity)):
            raise KVMemoryError(f"slots must be distinct indices in [0, {self.capacity}), got {slots.tolist()}")
        for name, t in (("k", k), ("v", v)):
            if tuple(t.shape) != want:
                raise KVMemoryError(f"{name} must have shape {list(want)}, got {list(t.shape)}")
            if self.check_values and not torch.isfinite(t).all():
                raise KVMemoryError(f"{name} holds NaN or infinite values; memory left unchanged")
        if poses is None:
            poses = np.zeros((self.batch, n, self.cfg.pose_dim), dtype=np.float32)
        poses = poses.detach().cpu().numpy() if isinstance(poses, torch.Tensor) else np.asarray(poses, np.float32)
        if poses.shape != (self.batch, n, self.cfg.pose_dim):
            raise KVMemoryError(f"poses must have shape {[self.batch, n, self.cfg.pose_dim]}, got {list(poses.shape)}")
        if not np.isfinite(poses).all():
            raise KVMemoryError("poses hold NaN or infinite values; memory left unchanged")
        return WritePlan(slots, k, v, frames, poses, False if sink is None else np.asarray(sink, dtype=bool))

    def commit(self, plan: WritePlan) -> None:
        """Store a checked write (check_write); cannot fail on a plan made for this memory."""
        slots, k, v, frames, poses, n = plan.slots, plan.k, plan.v, plan.frames, plan.poses, len(plan.slots)
        if n == 0:
            return
        self.evictions += int((self.frame[slots] >= 0).sum())  # overwriting a held slot evicts it
        idx = _run_or_index(slots, self.device)
        self.k[:, :, idx] = k.to(self.k.dtype)
        self.v[:, :, idx] = v.to(self.v.dtype)
        self.valid[idx] = True
        self.frame[slots] = frames
        self.pose[:, slots] = poses
        self.sink[slots] = plan.sink
        self.written[slots] = np.arange(self._counter, self._counter + n)
        self._counter += n

    def view(self, slots=None) -> MemoryView:
        """What the generator attends to: every held slot (None; in slot order) or the given
        slot indices, in order. Empty slots are left out rather than masked: with every slot
        valid, attention needs no mask and SDPA takes its fused kernels (a boolean mask forces
        the slow ones). When every slot is held, the buffers themselves are the view (no copy)."""
        if slots is None:
            held = self.frame >= 0
            if held.all():
                return MemoryView(self.k, self.v, self.valid, all_valid=True)
            slots = np.flatnonzero(held)
        slots = np.asarray(slots, dtype=np.int64)
        all_valid = bool((self.frame[slots] >= 0).all())
        idx = _run_or_index(slots, self.device)
        if isinstance(idx, slice):  # consecutive slots (a memory filling up in order): views, no copy
            return MemoryView(self.k[:, :, idx], self.v[:, :, idx], self.valid[idx], all_valid=all_valid)
        return MemoryView(self.k.index_select(2, idx), self.v.index_select(2, idx), self.valid.index_select(0, idx),
                          all_valid=all_valid)

    def state(self) -> dict:
        """A summary for logs and the runtime's `memory` reply."""
        return {
            "capacity": self.capacity,
            "used": self.num_used,
            "bytes_per_slot": self.bytes_per_slot,
            "bytes_held": self.bytes_held(),
            "bytes_allocated": self.bytes_allocated(),
            "evictions": self.evictions,
        }


def _run_or_index(slots: np.ndarray, device: torch.device) -> slice | torch.Tensor:
    """Slots as a slice when they are a run of consecutive indices (no host-to-device copy, and
    views rather than gathers), else as an index tensor on `device`."""
    if len(slots) and np.array_equal(slots, np.arange(slots[0], slots[0] + len(slots))):
        return slice(int(slots[0]), int(slots[0]) + len(slots))
    return to_device_nowait(torch.as_tensor(np.asarray(slots, np.int64)), device)
