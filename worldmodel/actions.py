"""The action space: one continuous vector per frame, shared by the data, the model and the wire.

Row layout of an action tensor `[..., ACTION_DIM]` (float32), in this order:

| index | name    | unit                     | range       |
|-------|---------|--------------------------|-------------|
| 0     | turn    | degrees per frame (+left)| [-22.5, 22.5] |
| 1     | look    | degrees per frame (+up)  | [-10, 10]   |
| 2     | forward | map units per frame (+fwd)| [-25, 25]  |
| 3     | strafe  | map units per frame (+right) | [-25, 25] |

An action at frame i is what the player did between frame i-1 and frame i (the action that
*led to* frame i); the first frame of a recording has a zero action.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActionSpec:
    name: str
    unit: str
    low: float
    high: float
    description: str


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("turn", "deg/frame", -22.5, 22.5, "yaw change, positive turns left"),
    ActionSpec("look", "deg/frame", -10.0, 10.0, "pitch change, positive looks up"),
    ActionSpec("forward", "units/frame", -25.0, 25.0, "move along the view, positive forward"),
    ActionSpec("strafe", "units/frame", -25.0, 25.0, "move sideways, positive right"),
)
ACTION_NAMES = tuple(a.name for a in ACTIONS)
ACTION_DIM = len(ACTIONS)
ACTION_LOW = np.array([a.low for a in ACTIONS], dtype=np.float32)
ACTION_HIGH = np.array([a.high for a in ACTIONS], dtype=np.float32)

# Pose layout `[..., POSE_DIM]` (float32): x, y, z in map units; angle (yaw) and pitch in degrees.
POSE_NAMES = ("x", "y", "z", "angle", "pitch")
POSE_DIM = len(POSE_NAMES)


def normalize_actions(actions):
    """Map actions from their units to [-1, 1] per component (numpy array or torch tensor)."""
    scale = (ACTION_HIGH - ACTION_LOW) / 2
    center = (ACTION_HIGH + ACTION_LOW) / 2
    if isinstance(actions, np.ndarray):
        return (actions - center) / scale
    import torch

    return (actions - torch.as_tensor(center, device=actions.device, dtype=actions.dtype)) / torch.as_tensor(
        scale, device=actions.device, dtype=actions.dtype
    )


def action_space_description() -> list[dict]:
    """The action space as plain data, as the runtime's `info` reply reports it."""
    return [
        {"name": a.name, "unit": a.unit, "low": a.low, "high": a.high, "description": a.description}
        for a in ACTIONS
    ]
