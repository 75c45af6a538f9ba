"""`none`: no memory; every block sees only itself (a lower bound for the benchmarks)."""

from worldmodel.memory.strategy import MemoryStrategy


class NoMemory(MemoryStrategy):
    name = "none"

    def kept_frames(self) -> list[int]:
        return []
