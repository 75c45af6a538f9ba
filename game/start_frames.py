"""Where a session starts: real engine frames (the default) or the user's own images.

The start frames are written into the runtime's memory with `observe`, so the model continues
from a real view. A sequence is always a whole number of blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from worldmodel.actions import ACTION_DIM


@dataclass
class StartSequence:
    frames: np.ndarray  # [n, H, W, 3] uint8, n a multiple of the block size
    actions: np.ndarray  # [n, ACTION_DIM] float32 (zero: the camera stands still)
    poses: np.ndarray | None  # [n, 5] float32 from the engine, None for images
    source: str  # shown on the HUD


def resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """[n, h, w, 3] uint8 -> [n, height, width, 3] uint8 (area filter when shrinking)."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BOX if f.shape[0] >= height
                                                          else Image.BILINEAR)) for f in frames])


def from_engine(engine, block_size: int, height: int, width: int, blocks: int = 1) -> StartSequence:
    """A new episode of `engine` (worldmodel.data.engine.DoomEngine), standing still for
    `blocks` blocks: the first frame after spawn and the frames that follow it."""
    frame, pose = engine.reset()
    frames, poses = [frame], [pose]
    still = np.zeros(ACTION_DIM, dtype=np.float32)
    while len(frames) < blocks * block_size:
        frame, pose, done = engine.step(still)
        if done:
            raise RuntimeError("the engine ended the episode while standing still at the start")
        frames.append(frame)
        poses.append(pose)
    n = len(frames)
    return StartSequence(resize(np.stack(frames), height, width), np.zeros((n, ACTION_DIM), np.float32),
                         np.stack(poses).astype(np.float32), f"{engine.s.wad}:{engine.s.map}")


def from_images(paths: list[str | Path], block_size: int, height: int, width: int) -> StartSequence:
    """Images (any size, any format PIL reads) in order; resized to the model's frame size. When
    their count is not a whole number of blocks, the first image is repeated in front, as if
    the camera had stood still there."""
    if not paths:
        raise ValueError("no start images given")
    images = []
    for p in paths:
        try:
            images.append(np.asarray(Image.open(p).convert("RGB")))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read start image {p}: {e}") from None
    frames = [resize(img[None], height, width)[0] for img in images]
    pad = (-len(frames)) % block_size
    frames = [frames[0]] * pad + frames
    n = len(frames)
    names = ", ".join(Path(p).name for p in paths[:3]) + (" …" if len(paths) > 3 else "")
    return StartSequence(np.stack(frames), np.zeros((n, ACTION_DIM), np.float32), None, f"images: {names}")
