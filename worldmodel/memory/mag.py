"""`mag`: Memorize-and-Generate. A separate memory model runs the clean pass of a finished block
and only the last frame's K/V is kept (compression B). The generator only reads.

Attention: when more slots are held than `attention_budget`, the next block attends to the most
recent half of the budget plus the slots whose poses overlap the current view the most
(pose-indexed retrieval), so the cost per block is constant however long the session runs.

Eviction (capacity full): the oldest slot among the most redundant ones — the slot whose view
overlaps another held slot the most — so that coverage of places is kept as long as possible.
The newest `attention_budget // 2` slots are never evicted.
"""

from __future__ import annotations

import numpy as np

from worldmodel.memory.retrieval import select_slots, view_overlap
from worldmodel.memory.strategy import MemoryStrategy


class MagMemory(MemoryStrategy):
    name = "mag"
    writer = "memory_model"

    def kept_frames(self) -> list[int]:
        return [self.block_frames - 1]

    def min_capacity(self) -> int:
        # Eviction ranks a slot by its overlap with another held slot: with one slot there is none.
        return 2

    @property
    def recent(self) -> int:
        return self.cfg.attention_budget // 2

    def choose_slots(self, memory, frames):
        n = len(frames)
        free = memory.free_slots()
        if len(free) >= n:
            return free[:n], np.zeros(n, dtype=bool)
        used = memory.used_slots()
        candidates = used[: max(len(used) - self.recent, 0)]
        need = n - len(free)
        if len(candidates) < need:
            return super().choose_slots(memory, frames)
        pose = memory.pose[0]
        redundancy = np.array(
            [np.max(np.delete(view_overlap(pose[s], pose[used]), np.flatnonzero(used == s))) for s in candidates]
        )
        # most redundant first; among equals the oldest (candidates are oldest-first)
        order = np.argsort(-redundancy, kind="stable")[:need]
        return np.concatenate([free, candidates[order]]), np.zeros(n, dtype=bool)

    def steady_slots(self, capacity: int) -> int:
        return min(capacity, self.cfg.attention_budget)

    def attend_slots(self, memory, pose=None):
        used = memory.used_slots()
        budget = self.cfg.attention_budget
        if len(used) <= budget:
            return None
        return select_slots(used, memory.pose[0], None if pose is None else np.asarray(pose), budget, self.recent)
