"""The camera pose of a session: the engine's when it sends one, else integrated from actions.

Doom conventions (worldmodel.actions): angle in degrees in [0, 360), positive turn = left
(angle grows); forward moves along the angle, strafe right along angle - 90°; pitch + up.
Per frame the turn is applied first, then the move along the new angle (as Doom's player code
does per tic). Momentum and walls are not modelled: an integrated pose is a kinematic estimate,
which is enough to index memory by place; send true poses when the engine has them.
"""

from __future__ import annotations

import numpy as np

from worldmodel.actions import POSE_DIM

PITCH_LIMIT = 90.0


class PoseTracker:
    def __init__(self, start: np.ndarray | None = None):
        self.pose = np.zeros(POSE_DIM, np.float64) if start is None else np.asarray(start, np.float64).copy()

    def advance(self, actions: np.ndarray, poses: np.ndarray | None = None) -> np.ndarray:
        """actions [F, A], poses [F, P] or None -> the pose after each frame, float32 [F, P].

        With poses given they are the truth and the tracker continues from the last one."""
        if poses is not None:
            self.pose = np.asarray(poses[-1], np.float64).copy()
            return np.asarray(poses, np.float32)
        out = np.empty((len(actions), POSE_DIM), np.float32)
        x, y, z, angle, pitch = self.pose
        for i, (turn, look, forward, strafe) in enumerate(np.asarray(actions, np.float64)):
            angle = (angle + turn) % 360.0
            pitch = float(np.clip(pitch + look, -PITCH_LIMIT, PITCH_LIMIT))
            th = np.deg2rad(angle)
            x += forward * np.cos(th) + strafe * np.sin(th)  # right = angle - 90°: (sin, -cos)
            y += forward * np.sin(th) - strafe * np.cos(th)
            out[i] = (x, y, z, angle, pitch)
        self.pose = np.array([x, y, z, angle, pitch], np.float64)
        return out
