"""KV memory and the strategies that fill it.

| strategy | keeps per block | who writes | forgets |
|----------|-----------------|------------|---------|
| none     | nothing         | -          | everything |
| full     | all B frames    | generator  | only at capacity (oldest non-sink) |
| window   | all B frames    | generator  | beyond sinks + last W frames |
| mag      | last frame      | memory model | at capacity (most redundant pose) |
| memorypack | as window, plus a learned state ψ | generator + SemanticPack | KV as window; ψ is a fixed size |
"""

from worldmodel.config import MemoryConfig
from worldmodel.memory.full import FullMemory
from worldmodel.memory.kv_memory import KVMemory, KVMemoryError
from worldmodel.memory.mag import MagMemory
from worldmodel.memory.memorypack import MemoryPackMemory
from worldmodel.memory.none import NoMemory
from worldmodel.memory.strategy import MemoryStrategy
from worldmodel.memory.window import WindowMemory

STRATEGIES: dict[str, type[MemoryStrategy]] = {
    s.name: s for s in (NoMemory, FullMemory, WindowMemory, MagMemory, MemoryPackMemory)
}


def make_strategy(cfg: MemoryConfig, block_frames: int) -> MemoryStrategy:
    try:
        cls = STRATEGIES[cfg.strategy]
    except KeyError:
        raise ValueError(f"unknown memory strategy {cfg.strategy!r}; choose one of {sorted(STRATEGIES)}") from None
    return cls(cfg, block_frames)


__all__ = ["KVMemory", "KVMemoryError", "MemoryStrategy", "STRATEGIES", "make_strategy"]
