"""Recording what the explorer shows to mp4 (H.264 through imageio-ffmpeg).

One video frame per displayed model frame, at the model's frame rate: the dream panel, and the
truth panel beside it in truth mode, upscaled by an integer factor (nearest neighbour, so the
pixels stay the model's) to at least `min_height` rows. The HUD is not recorded.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def upscale(frame: np.ndarray, k: int) -> np.ndarray:
    """[H, W, 3] -> [k*H, k*W, 3], nearest neighbour."""
    return frame if k == 1 else frame.repeat(k, axis=0).repeat(k, axis=1)


class Recorder:
    def __init__(self, path: str | Path, fps: float, min_height: int = 240):
        self.path = Path(path)
        self.fps = fps
        self.min_height = min_height
        self.frames = 0
        self._writer = None
        self._k = None
        self._shape = None

    def add(self, panel: np.ndarray) -> None:
        """panel: [H, W, 3] uint8, the same size on every call."""
        import imageio.v2 as imageio

        if self._writer is None:
            h, w = panel.shape[:2]
            k = max(1, math.ceil(self.min_height / h))
            if (k * h) % 2 or (k * w) % 2:
                k += 1  # H.264 in yuv420p needs even sides
            self._k, self._shape = k, panel.shape
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = imageio.get_writer(self.path, fps=self.fps, codec="libx264", quality=8,
                                              macro_block_size=1, pixelformat="yuv420p")
        if panel.shape != self._shape:
            raise ValueError(f"recorded frames must keep one size: started with {self._shape}, got {panel.shape}")
        self._writer.append_data(upscale(np.ascontiguousarray(panel), self._k))
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file; returns its path, or None when no frame was written."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        return self.path
