"""`memorypack`: the MemoryPack baseline (seed 2). Short-term: the `window` strategy's KV cache
(sinks + the last W frames, written by the generator). Long-term: the SemanticPack state ψ
(worldmodel/model/semantic_pack.py), M tokens updated once per finished block from its clean
latents and read by the generator's cross-attention as context [prompt ; ψ].

The KV side is exactly `window`; Rollout owns ψ beside the KV memory (one per session, cleared
by reset). Memory held: the window's K/V plus M x text_dim numbers of ψ, whatever the length.
"""

from worldmodel.memory.window import WindowMemory


class MemoryPackMemory(WindowMemory):
    name = "memorypack"
    semantic_state = True
