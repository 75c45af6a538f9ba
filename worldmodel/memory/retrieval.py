"""Pose-indexed retrieval: which remembered slots overlap the current view.

A pose is (x, y, z, angle, pitch) as in worldmodel.actions. Two views overlap when the cameras
are close and look the same way; the score is cos(yaw difference), clipped at 0, times a
distance falloff. It needs no learning and costs O(slots) on the host per block.
"""

from __future__ import annotations

import numpy as np

DISTANCE_SCALE = 256.0  # map units at which overlap falls to 1/e (a Doom room is ~256-512 units)


def view_overlap(pose: np.ndarray, slot_poses: np.ndarray) -> np.ndarray:
    """pose [P], slot_poses [S, P] -> overlap in [0, 1], [S]."""
    d = np.linalg.norm(slot_poses[:, :2] - pose[None, :2], axis=-1)
    dyaw = np.deg2rad(slot_poses[:, 3] - pose[3])
    return np.clip(np.cos(dyaw), 0.0, None) * np.exp(-d / DISTANCE_SCALE)


def select_slots(
    used_oldest_first: np.ndarray,
    slot_poses: np.ndarray,
    pose: np.ndarray | None,
    budget: int,
    recent: int,
) -> np.ndarray:
    """Choose at most `budget` of the used slots: the `recent` newest, then the best-overlapping.

    used_oldest_first: [U] slot indices ordered by write time; slot_poses: [capacity, P].
    Returns the chosen slot indices (recent first, in write order).
    """
    if len(used_oldest_first) <= budget:
        return used_oldest_first
    recent = min(recent, budget)
    newest = used_oldest_first[len(used_oldest_first) - recent:] if recent else used_oldest_first[:0]
    rest = used_oldest_first[: len(used_oldest_first) - recent]
    k = budget - recent
    if pose is None:
        chosen = rest[len(rest) - k:]
    else:
        score = view_overlap(np.asarray(pose, np.float32), slot_poses[rest])
        # stable: ties go to the newer slot
        order = np.argsort(-score[::-1], kind="stable")
        chosen = np.sort(rest[::-1][order[:k]])
    return np.concatenate([chosen, newest])
