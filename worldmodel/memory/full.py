"""`full`: keep the K/V of every frame (Self Forcing). Memory grows by B slots per block.

Eviction (only when the capacity runs out): frames 0..sink_frames-1 of a session are sinks and stay;
the oldest other slots are overwritten, so a full memory degrades to sinks + the most recent
frames instead of failing.
"""

import numpy as np

from worldmodel.memory.strategy import MemoryStrategy


class FullMemory(MemoryStrategy):
    name = "full"

    def kept_frames(self) -> list[int]:
        return list(range(self.block_frames))

    def min_capacity(self) -> int:
        # The first sink_frames frames are never evicted; a whole block must fit beside them.
        return self.cfg.sink_frames + self.block_frames

    def choose_slots(self, memory, frames):
        slots, _ = super().choose_slots(memory, frames)
        return slots, np.asarray(frames) < self.cfg.sink_frames
