"""The seam between the server and a model: a Backend makes EngineSessions.

Frames on this interface are RGB uint8 numpy arrays [F, H, W, 3]; actions float32 [F, A] in the
units of worldmodel.actions; poses float32 [F, pose_dim]. F is always one block (block_frames)
for `step`, and a whole number of blocks for `observe`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from worldmodel.config import WorldModelConfig


class EngineSession(ABC):
    """One client's generator state and KV memory."""

    # Pose-indexed retrieval where the strategy has it (`mag`); False attends to the newest slots
    # only (the "mag (recent only)" ablation of `magworld eval revisit`). Set before the first step.
    retrieval: bool = True

    @abstractmethod
    def reset(self) -> None:
        """Forget everything; the next frame is frame 0."""

    @abstractmethod
    def observe(self, frames: np.ndarray, actions: np.ndarray, poses: np.ndarray | None) -> None:
        """Encode real frames [k*B, H, W, 3] and write them into memory as if generated."""

    @abstractmethod
    def step(self, actions: np.ndarray, poses: np.ndarray | None, scene: int | None) -> np.ndarray:
        """Generate the next block from actions [B, A] -> frames [B, H, W, 3] uint8."""

    @abstractmethod
    def memory_state(self) -> dict:
        """Slots used/capacity, bytes held, what a full cache would hold, frames per slot,
        evictions, slot table."""

    @abstractmethod
    def decode_slot(self, slot: int) -> np.ndarray:
        """Pixels reconstructed from one memory slot: [B, H, W, 3] uint8 (last frame = the slot's)."""

    @property
    @abstractmethod
    def next_frame(self) -> int:
        """Absolute index of the next frame to generate."""


class Backend(ABC):
    name = "base"

    def __init__(self, config: WorldModelConfig):
        self.config = config

    def bytes_per_slot(self) -> int:
        """Bytes one memory slot holds: K and V of one latent frame in every layer (float32 here;
        a backend that stores the cache in another dtype overrides this)."""
        m = self.config.model
        return 2 * m.layers * m.tokens_per_frame * m.dim * 4

    def strategies(self) -> tuple[str, ...]:
        """The memory strategies this backend's model can serve (what `info` advertises)."""
        from worldmodel.memory import STRATEGIES

        return tuple(sorted(s for s, cls in STRATEGIES.items() if not cls.semantic_state))

    @abstractmethod
    def new_session(self, strategy: str | None = None, capacity: int | None = None,
                    attention_budget: int | None = None, seed: int = 0) -> EngineSession:
        ...

    batches_steps = False  # True where step_many really runs sessions together
    # After step_many, per session: how many steps the model pass that made its block held (1:
    # it ran alone); the server reports it as the step's `batch`. None: not known.
    last_pass_sizes: list[int] | None = None

    def step_many(self, sessions: list[EngineSession], actions: list[np.ndarray], poses: list[np.ndarray | None],
                  scenes: list[int | None]) -> list[np.ndarray | Exception]:
        """Step several distinct sessions (one block each); returns each one's frames, or the
        exception its step raised (that session is left as it was; the others are not held
        back), and sets last_pass_sizes. This default steps them one after another."""
        out: list[np.ndarray | Exception] = []
        for session, a, p, scene in zip(sessions, actions, poses, scenes):
            try:
                out.append(session.step(a, p, scene))
            except Exception as e:  # reported per session by the caller
                out.append(e)
        self.last_pass_sizes = [1] * len(out)
        return out
