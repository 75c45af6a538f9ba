"""Truth beside the dream: the real ViZDoom engine run on the actions the world model gets.

The engine starts the session (its first frames are the model's start frames, so both start at
the same view) and then performs every action row the explorer sends, one frame per row. Its
frames are resized to the model's frame size so that the two are compared pixel for pixel.
"""

from __future__ import annotations

import numpy as np

from game.start_frames import StartSequence, from_engine, resize
from worldmodel.data.engine import DoomEngine, EngineSettings, snap_action
from worldmodel.data.splits import parse_map, scene_id


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images [H, W, 3]; inf when they are equal."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


class TruthEngine:
    def __init__(self, map_name: str = "freedoom2.wad:MAP01", height: int = 120, width: int = 160,
                 frame_skip: int = 2, seed: int = 0):
        wad, name = parse_map(map_name)
        self.map_name = f"{wad}:{name}"
        self.scene = scene_id(self.map_name)  # -1 for a map outside the training list
        self.height, self.width = height, width
        self.engine = DoomEngine(EngineSettings(wad=wad, map=name, frame_skip=frame_skip, seed=seed))
        self.pose = None

    @property
    def fps(self) -> float:
        return self.engine.s.fps

    def snap(self, actions: np.ndarray) -> np.ndarray:
        """The rows the engine performs exactly ([n, A] float32); send these to the model too."""
        return snap_action(actions, self.engine.s.frame_skip)

    def start(self, block_size: int, blocks: int = 1) -> StartSequence:
        seq = from_engine(self.engine, block_size, self.height, self.width, blocks)
        self.pose = seq.poses[-1]
        return seq

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """actions [n, A] -> frames [n, H, W, 3] uint8 at the model's size, poses [n, 5] float32.
        If the episode ends (it should not: no monsters, god mode) the last frame is repeated."""
        frames, poses = [], []
        for a in actions:
            frame, pose, done = self.engine.step(a)
            if done:
                frame, pose = frames[-1] if frames else np.zeros((self.engine.s.height, self.engine.s.width, 3), np.uint8), self.pose
            frames.append(frame)
            poses.append(pose)
            self.pose = pose
        return resize(np.stack(frames), self.height, self.width), np.stack(poses).astype(np.float32)

    def close(self) -> None:
        self.engine.close()
