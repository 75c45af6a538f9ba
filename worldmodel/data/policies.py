"""Exploration policies: what the recorded player does.

A policy makes *segments*; a segment yields one action per frame (`[ACTION_DIM]` float32, already
snapped to what the engine performs exactly) until it is done. Segments see the current pose, so
`wander` can steer away from walls; the others are open-loop plans that come back:

- `wander`: smooth random walking and turning with momentum, like a person exploring.
- `look-around`: stand still, pan away by a random angle (up to a full turn, with some pitch), then
  return along the reversed path to the start view (MAG-Bench's "leave and come back").
- `out-and-back`: walk away in straight legs with turns, then retrace the path backwards to the start.
- `mix`: a weighted choice among the three, one segment at a time.

Segments that must come back exactly begin with `SETTLE_FRAMES` still frames, because Doom's
momentum keeps the player sliding after moving.
"""

from __future__ import annotations

import numpy as np

from worldmodel.actions import ACTION_DIM
from worldmodel.data.engine import ANGLE_UNIT, PITCH_LIMIT, snap_action

SETTLE_FRAMES = 30  # 60 tics: a running player slows below Doom's stop speed and halts
STOP_FRAMES = 25  # frames for a walking player to come to rest (speed decays 0.906 per tic)
POLICIES = ("wander", "look-around", "out-and-back", "mix")
DEFAULT_MIX = {"wander": 0.5, "look-around": 0.25, "out-and-back": 0.25}


def reverse_plan(actions: np.ndarray) -> np.ndarray:
    """Actions that undo `actions` `[N, ACTION_DIM]` -> `[N + 1, ACTION_DIM]`.

    In Doom a frame first turns, then thrusts along the new heading. Undoing frame i therefore
    needs the opposite thrust while still facing heading i, and only then the opposite turn: the
    turns are shifted by one frame against the thrusts. Movement is exactly undone only in free
    space and after momentum has died down; turn and look are undone exactly.
    """
    n = len(actions)
    out = np.zeros((n + 1, ACTION_DIM), dtype=np.float32)
    rev = actions[::-1]
    out[1:, :2] = -rev[:, :2]
    out[:n, 2:] = -rev[:, 2:]
    return out


class Segment:
    """Yields actions from `plan` `[N, ACTION_DIM]`; `next(pose)` returns None when done.
    `marks` names frame offsets inside the plan (e.g. where the return starts)."""

    def __init__(self, plan: np.ndarray, kind: str, marks: dict | None = None):
        self.plan, self.kind, self.marks, self.i = plan, kind, marks or {}, 0

    def next(self, pose: np.ndarray) -> np.ndarray | None:
        if self.i >= len(self.plan):
            return None
        a = self.plan[self.i]
        self.i += 1
        return a

    def __len__(self):
        return len(self.plan)


def _smooth_noise(rng, n: int, momentum: float, scale: float) -> np.ndarray:
    """AR(1) noise: a target that changes slowly, as a person's intention does."""
    x = np.zeros(n)
    v = rng.normal() * scale
    for i in range(n):
        v = momentum * v + np.sqrt(1 - momentum**2) * rng.normal() * scale
        x[i] = v
    return x


class WanderSegment(Segment):
    """Walks forward with smoothly varying speed, strafe and turn; turns away when it is stuck."""

    def __init__(self, rng, frame_skip: int, frames: int):
        n = frames
        plan = np.zeros((n, ACTION_DIM), dtype=np.float32)
        plan[:, 0] = _smooth_noise(rng, n, 0.95, 4.0)
        plan[:, 1] = _smooth_noise(rng, n, 0.97, 0.6)
        plan[:, 2] = np.clip(10.0 + _smooth_noise(rng, n, 0.97, 6.0), -6.0, 16.0)
        plan[:, 3] = _smooth_noise(rng, n, 0.95, 3.0)
        super().__init__(plan, "wander")
        self.rng, self.skip = rng, frame_skip
        self.pitch = None
        self.recent: list[np.ndarray] = []
        self.escape = 0
        self.escape_turn = 0.0

    def next(self, pose):
        a = super().next(pose)
        if a is None:
            return None
        a = a.copy()
        self.recent = (self.recent + [pose[:2].copy()])[-8:]
        stuck = len(self.recent) == 8 and np.linalg.norm(self.recent[-1] - self.recent[0]) < 12.0
        if stuck and self.escape == 0:
            self.escape = int(self.rng.integers(8, 20))
            self.escape_turn = float(self.rng.choice([-1, 1]) * self.rng.uniform(8, 14))
        if self.escape > 0:
            self.escape -= 1
            a[0], a[2] = self.escape_turn, -3.0 if self.escape > 4 else 8.0
            self.recent = []
        # Keep pitch inside the engine's limits so that look is never clamped, and drift it
        # back toward level: people mostly look ahead.
        a[1] = float(np.clip(a[1] - 0.05 * pose[4], -PITCH_LIMIT * 0.8 - pose[4], PITCH_LIMIT * 0.8 - pose[4]))
        return snap_action(a, self.skip)


def look_around_plan(rng, frame_skip: int, max_turn_deg: float = 360.0):
    """Still frames, a pan away (random total angle up to `max_turn_deg`, random pitch), a short
    hold, and the exact reverse. Returns (plan [N, 4], marks)."""
    per_tic_units = int(rng.choice([256, 512, 768, 1024]))  # 1.4..5.6 deg per tic, exact
    step = per_tic_units * ANGLE_UNIT * frame_skip
    total = rng.uniform(30.0, max_turn_deg)
    n_out = max(2, int(total / step))
    sign = rng.choice([-1.0, 1.0])
    out = np.zeros((n_out, ACTION_DIM), dtype=np.float32)
    out[:, 0] = sign * step
    pitch_target = rng.uniform(-15, 15)
    look_units = int(round(pitch_target / n_out / (ANGLE_UNIT * frame_skip)))
    out[:, 1] = look_units * ANGLE_UNIT * frame_skip
    hold = np.zeros((int(rng.integers(2, 8)), ACTION_DIM), dtype=np.float32)
    settle = np.zeros((SETTLE_FRAMES, ACTION_DIM), dtype=np.float32)
    back = reverse_plan(out)
    plan = snap_action(np.concatenate([settle, out, hold, back]), frame_skip)
    marks = {"start": SETTLE_FRAMES - 1, "away": SETTLE_FRAMES + n_out + len(hold) - 1, "end": len(plan) - 1}
    return plan, marks


def _turn_leg(frames: int, units_per_tic: int, frame_skip: int, look_units: int = 0) -> np.ndarray:
    """A pan of `frames` frames turning `units_per_tic` engine angle units per tic (sign = direction)
    and looking `look_units` per tic: whole units, so that its reverse undoes it exactly. [frames, 4]."""
    leg = np.zeros((frames, ACTION_DIM), dtype=np.float32)
    leg[:, 0] = units_per_tic * ANGLE_UNIT * frame_skip
    leg[:, 1] = look_units * ANGLE_UNIT * frame_skip
    return leg


def long_away_plan(rng, frame_skip: int, min_away_frames: int = 100):
    """A look-around whose camera stays away from the start view for at least `min_away_frames`
    frames: a pan of 120-240 degrees, an excursion of small pans within 30 degrees of the far
    heading (its second half is its own reverse, so it ends exactly where it began), then the
    pan's exact reverse. (plan, marks); marks["remembered"]: the start view's offset from
    marks["start"] (0: the case's first frame)."""
    units = int(rng.choice([512, 768, 1024]))
    step = units * ANGLE_UNIT * frame_skip
    sign = int(rng.choice([-1, 1]))
    n_out = max(2, int(rng.uniform(120.0, 240.0) / step))
    look = int(round(rng.uniform(-10, 10) / n_out / (ANGLE_UNIT * frame_skip)))
    out = _turn_leg(n_out, sign * units, frame_skip, look)
    legs, heading, pitch, length = [], 0.0, 0.0, 0
    deg = ANGLE_UNIT * frame_skip  # degrees per frame of one unit per tic
    while 2 * length < min_away_frames:
        n = int(rng.integers(4, 12))
        turn = int(rng.choice([-1, 1])) * int(rng.choice([256, 512]))
        if abs(heading + n * turn * deg) > 30.0:  # stay near the far heading
            turn = -turn
        tilt = int(rng.integers(-40, 41))
        if abs(pitch + n * tilt * deg) > 12.0:  # pitch inside the engine's limits, never clamped
            tilt = -tilt
        heading, pitch = heading + n * turn * deg, pitch + n * tilt * deg
        hold = np.zeros((int(rng.integers(0, 6)), ACTION_DIM), dtype=np.float32)
        legs += [_turn_leg(n, turn, frame_skip, tilt), hold]
        length += n + len(hold)
    half = np.concatenate(legs)
    excursion = np.concatenate([half, reverse_plan(half)])
    settle = np.zeros((SETTLE_FRAMES, ACTION_DIM), dtype=np.float32)
    plan = snap_action(np.concatenate([settle, out, excursion, reverse_plan(out)]), frame_skip)
    away = SETTLE_FRAMES + n_out + len(excursion) - 1
    return plan, {"start": SETTLE_FRAMES - 1, "away": away, "end": len(plan) - 1, "remembered": 0}


def look_first_plan(rng, frame_skip: int):
    """A look-around that starts somewhere else: the session's first frames (the `window`
    strategy's sinks) face another way; a pan of 90-180 degrees brings the camera to the view
    that is then left and returned to, so only memory of the middle of the session holds it.
    (plan, marks); marks["remembered"]: that view's last frame before leaving, from marks["start"]."""
    units = int(rng.choice([512, 768, 1024]))
    step = units * ANGLE_UNIT * frame_skip
    pre = _turn_leg(max(2, int(rng.uniform(90.0, 180.0) / step)), int(rng.choice([-1, 1])) * units, frame_skip)
    still = np.zeros((int(rng.integers(2, 6)), ACTION_DIM), dtype=np.float32)
    look, marks = look_around_plan(rng, frame_skip)
    settle = np.zeros((SETTLE_FRAMES, ACTION_DIM), dtype=np.float32)
    plan = snap_action(np.concatenate([settle, pre, still, look[SETTLE_FRAMES:]]), frame_skip)
    shift = len(pre) + len(still)
    return plan, {"start": SETTLE_FRAMES - 1, "away": marks["away"] + shift, "end": len(plan) - 1,
                  "remembered": shift}


def out_and_back_plan(rng, frame_skip: int, legs: int | None = None):
    """Still frames, a walk away in 1-3 straight legs with turns in place between them, then the
    walk retraced backwards (same headings, opposite thrust) to the start. (plan, marks).

    Each leg moves at constant speed and ends with the player at rest, so that Doom's momentum,
    including its cut-off at low speed, is mirrored exactly on the way back; only a wall on the
    way can break the return (the revisit benchmark drops such cases).
    """
    still = np.zeros((SETTLE_FRAMES, ACTION_DIM), dtype=np.float32)
    rest = np.zeros((STOP_FRAMES, ACTION_DIM), dtype=np.float32)
    out, back = [still], []
    for _ in range(int(legs or rng.integers(1, 4))):
        turn = np.zeros((int(rng.integers(0, 12)), ACTION_DIM), dtype=np.float32)
        turn[:, 0] = rng.choice([-1.0, 1.0]) * int(rng.choice([256, 512, 1024])) * ANGLE_UNIT * frame_skip
        walk = np.zeros((int(rng.integers(6, 18)), ACTION_DIM), dtype=np.float32)
        walk[:, 2] = rng.uniform(4.0, 10.0)
        walk[:, 3] = rng.uniform(-2.0, 2.0)
        walk = snap_action(walk, frame_skip)
        out += [turn, walk, rest]
        back = [-walk, rest, -turn] + back
    plan = snap_action(np.concatenate(out + back), frame_skip)
    n_out = sum(len(x) for x in out)
    marks = {"start": SETTLE_FRAMES - 1, "away": n_out - 1, "end": len(plan) - 1}
    return plan, marks


class Policy:
    """Makes segments. `weights` (for `mix`) maps sub-policy names to relative weights."""

    def __init__(self, name: str, frame_skip: int, weights: dict[str, float] | None = None):
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
        self.name, self.skip = name, frame_skip
        w = dict(weights or DEFAULT_MIX)
        bad = set(w) - set(DEFAULT_MIX)
        if bad or any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
            raise ValueError(f"mix weights {w} must be non-negative, not all zero, over {sorted(DEFAULT_MIX)}")
        self.weights = w

    def segment(self, rng) -> Segment:
        name = self.name
        if name == "mix":
            names = sorted(self.weights)
            p = np.array([self.weights[k] for k in names], dtype=np.float64)
            name = names[int(rng.choice(len(names), p=p / p.sum()))]
        if name == "wander":
            return WanderSegment(rng, self.skip, int(rng.integers(60, 200)))
        if name == "look-around":
            plan, marks = look_around_plan(rng, self.skip)
            return Segment(plan, "look-around", marks)
        plan, marks = out_and_back_plan(rng, self.skip)
        return Segment(plan, "out-and-back", marks)


def parse_weights(text: str | None) -> dict[str, float] | None:
    """`"wander=2,look-around=1,out-and-back=1"` -> dict; None passes through."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        k, sep, v = item.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise ValueError(f"mix weight {item!r} is not NAME=NUMBER") from None
        if not sep:
            raise ValueError(f"mix weight {item!r} is not NAME=NUMBER")
    return out
