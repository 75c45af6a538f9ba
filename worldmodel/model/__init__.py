"""The causal diffusion transformer and its parts."""

from worldmodel.model.dit import CausalDiT, MemoryView

__all__ = ["CausalDiT", "MemoryView"]
