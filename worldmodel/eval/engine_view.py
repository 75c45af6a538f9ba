"""The engine's frames at the model's frame size, for the evaluations that run ViZDoom beside the model.

ViZDoom renders a fixed list of resolutions; a model whose frames are not one of them (the tiny
test preset's 32x24) is compared with the engine rendered at 160x120 and resized, as `magworld
play` shows the engine beside the model.
"""

from __future__ import annotations

import numpy as np

from worldmodel.data.engine import EngineSettings

FALLBACK_RESOLUTION = (160, 120)  # width, height


def engine_settings(wad: str, map_name: str, height: int, width: int, frame_skip: int = 2,
                    seed: int = 0) -> EngineSettings:
    """Settings that render at (height, width) when ViZDoom can, else at FALLBACK_RESOLUTION."""
    import vizdoom as vzd

    w, h = (width, height) if hasattr(vzd.ScreenResolution, f"RES_{width}X{height}") else FALLBACK_RESOLUTION
    return EngineSettings(wad=wad, map=map_name, width=w, height=h, frame_skip=frame_skip, seed=seed)


def at_model_size(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """[n, h, w, 3] uint8 -> [n, height, width, 3] uint8."""
    from game.start_frames import resize  # the one resize of engine frames (area filter when shrinking)

    return resize(frames, height, width)
