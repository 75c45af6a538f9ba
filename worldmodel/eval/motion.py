"""What the camera did between the last context frame and each predicted frame: still, turning
on the spot, or moving — read from the engine's poses, not from the keys (a key against a wall
moves nothing).

Copy-last is exact where the camera stood still (up to animated textures and monsters) and a
poor guess where it moved, so a single mean over all frames mixes two different questions;
`eval next-block` reports each predictor's PSNR per kind beside the overall one.
"""

from __future__ import annotations

import torch

MOTION_KINDS = ("still", "turning", "moving")
STILL_UNITS = 1.0  # map units of (x, y) travel under which the camera has not moved
STILL_DEGREES = 0.5  # degrees of yaw + pitch change under which it has not turned


def motion_kinds(reference: torch.Tensor, poses: torch.Tensor) -> list[str]:
    """reference [POSE_DIM] (the last context frame's pose: x, y, z, angle, pitch), poses [F, POSE_DIM]
    -> one of MOTION_KINDS per frame, relative to the reference."""
    reference, poses = torch.as_tensor(reference, dtype=torch.float64), torch.as_tensor(poses, dtype=torch.float64)
    travel = (poses[:, :2] - reference[:2]).norm(dim=-1)
    yaw = torch.remainder(poses[:, 3] - reference[3] + 180.0, 360.0) - 180.0  # shortest way round
    turn = yaw.abs() + (poses[:, 4] - reference[4]).abs()
    return ["moving" if t >= STILL_UNITS else "turning" if a >= STILL_DEGREES else "still"
            for t, a in zip(travel.tolist(), turn.tolist())]
