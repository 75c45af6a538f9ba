"""`window`: the first S frames (sinks) plus the last W frames (LongLive). Forgets the rest.

Eviction: before a write would hold more than S + W frames, the oldest non-sink frames are
overwritten.
"""

import numpy as np

from worldmodel.memory.full import FullMemory
from worldmodel.memory.kv_memory import KVMemoryError


class WindowMemory(FullMemory):
    name = "window"

    def capacity_needed(self) -> int:
        return self.cfg.sink_frames + self.cfg.window_frames

    def min_capacity(self) -> int:
        return self.capacity_needed()  # the window never holds more than sinks + window

    def steady_slots(self, capacity: int) -> int:
        return min(capacity, self.capacity_needed())

    def capacity_error(self, capacity: int) -> str | None:
        if self.cfg.window_frames < self.block_frames:  # choose_slots refuses every block
            return (f"strategy {self.name!r} cannot run on this model: its window of {self.cfg.window_frames} "
                    f"frames is smaller than a block of {self.block_frames}")
        return super().capacity_error(capacity)

    def choose_slots(self, memory, frames):
        n = len(frames)
        limit = self.capacity_needed()
        if memory.capacity < limit:
            raise KVMemoryError(f"window needs {limit} slots (sinks + window), memory has {memory.capacity}")
        if n > self.cfg.window_frames:
            raise KVMemoryError(f"a block of {n} frames does not fit a window of {self.cfg.window_frames}")
        over = memory.num_used + n - limit
        if over > 0:
            used = memory.used_slots()
            victims = used[~memory.sink[used]][:over]
            free = memory.free_slots()[: n - over]
            return np.concatenate([free, victims]), np.asarray(frames) < self.cfg.sink_frames
        return super().choose_slots(memory, frames)
