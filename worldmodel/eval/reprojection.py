"""The geometric yardstick of the turn test: the last real frame, turned by the engine's yaw.

Doom draws the world column by column, each column one direction of view through a flat
projection plane, so a turn on the spot (no step, no change of pitch) moves every column to a new
place and changes nothing else. The screen column x sees the direction at angle
θ(x) = atan((cx − x) / f) left of the view's centre, with f = (W / 2) / tan(FOV / 2). After a
turn by Δ to the left, column x shows what the old frame showed at angle θ(x) + Δ. This module
remaps the columns so, linearly between neighbouring ones.

What it cannot show: the strip that turns into view (it repeats the edge column there) and
everything that changes on its own (animated textures, flickering light). So it is what a model
that gets the geometry exactly right and invents nothing would score. ViZDoom's horizontal field
of view at the data's 4:3 frames is 90°: on the turn cases, 90° fits the engine's turned frames
best (85° and 95° both score about 0.45 dB lower; session 10).
"""

from __future__ import annotations

import functools

import numpy as np

FOV_DEG = 90.0


def turn_columns(width: int, yaw_deg: float, fov_deg: float = FOV_DEG) -> tuple[np.ndarray, np.ndarray]:
    """(source column [W] float, in view [W] bool): where, in the frame before a turn of `yaw_deg`
    (positive = left, as the pose's angle grows), each column of the turned frame was, and whether it
    was in view then at all."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"the field of view must be in (0, 180) degrees, got {fov_deg}")
    cx = width / 2.0
    f = cx / np.tan(np.radians(fov_deg) / 2)
    theta = np.arctan((cx - (np.arange(width) + 0.5)) / f) + np.radians(yaw_deg)
    seen = np.abs(theta) < np.radians(fov_deg) / 2
    src = cx - f * np.tan(np.clip(theta, -np.radians(89.0), np.radians(89.0))) - 0.5
    return np.clip(src, 0, width - 1), seen


def turn_frame(frame: np.ndarray, yaw_deg: float, fov_deg: float = FOV_DEG) -> np.ndarray:
    """frame [H, W, 3] uint8 -> the same view turned by `yaw_deg` degrees (positive = left),
    [H, W, 3] uint8; the columns that come into view repeat the nearest edge."""
    i0, i1, t = _between(turn_columns(frame.shape[1], yaw_deg, fov_deg)[0])
    t = t[None, :, None]
    out = frame[:, i0].astype(np.float32) * (1 - t) + frame[:, i1].astype(np.float32) * t
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _between(src: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractional source columns [..., W] (within 0..W-1) -> the columns either side, i0 and i1,
    and the weight t of i1, for linear interpolation."""
    i0 = np.floor(src).astype(np.int64)
    return i0, np.minimum(i0 + 1, src.shape[-1] - 1), (src - i0).astype(np.float32)


def yaw_change(poses: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Degrees turned (positive = left) from pose `start` [5] to each of `poses` [T, 5], in
    (−180, 180]."""
    d = (np.asarray(poses, np.float64)[:, 3] - float(start[3])) % 360.0
    return np.where(d > 180.0, d - 360.0, d)


def turned_last_frame(last: np.ndarray, poses: np.ndarray, start_pose: np.ndarray) -> np.ndarray:
    """The last frame [H, W, 3] turned to each pose's yaw: [T, H, W, 3] uint8."""
    return np.stack([turn_frame(last, d) for d in yaw_change(poses, start_pose)])


IMPLIED_YAW_GRID = np.arange(-45.0, 45.0 + 1e-9, 0.75)  # degrees searched by implied_yaw


def implied_yaw(before: np.ndarray, after: np.ndarray, grid: np.ndarray = IMPLIED_YAW_GRID) -> float:
    """The turn that best explains `after` [H, W, 3] as `before` [H, W, 3] turned: the yaw (degrees,
    positive = left) in `grid` whose turned frame (as turn_frame, before rounding) is closest to
    `after` in mean squared error over the columns that were in view. A blurred frame that slides
    its content by the right angle gets the right yaw, where PSNR would only reward the blur; a frame
    that does not move gets about 0. Meaningful while a good part of the view is shared (|yaw| up
    to about 45°). Every yaw of the grid is tried at once, on the grey level of every other row (a
    turn moves columns only, so the rows and colours left out add nothing about the angle)."""
    i0, i1, t, seen = _grid_columns(before.shape[1], tuple(float(g) for g in grid))
    b = before[::2].astype(np.float32).mean(-1)  # [H/2, W]
    turned = b[:, i0] * (1 - t) + b[:, i1] * t  # [H/2, G, W]
    sq = ((turned - after[::2].astype(np.float32).mean(-1)[:, None]) ** 2).mean(0)  # [G, W]
    err = (sq * seen).sum(1) / np.maximum(seen.sum(1), 1)
    return float(np.asarray(grid, np.float64)[int(np.argmin(err))])


@functools.lru_cache(maxsize=8)
def _grid_columns(width: int, grid: tuple[float, ...]):
    """For each yaw of `grid`: source columns i0, i1 [G, W], the weight t of i1 [G, W], and which
    columns were in view [G, W] (as turn_columns)."""
    cols = [turn_columns(width, yaw) for yaw in grid]
    return (*_between(np.stack([c[0] for c in cols])), np.stack([c[1] for c in cols]))


def followed_share(implied: np.ndarray, engine: np.ndarray) -> float:
    """How much of the engine's turn the frames show: Σ implied·sign(engine) / Σ |engine| over the
    turned frames (1 = the right angle, 0 = no turn, < 0 = the wrong way)."""
    implied, engine = np.asarray(implied, np.float64), np.asarray(engine, np.float64)
    total = np.abs(engine).sum()
    return float((implied * np.sign(engine)).sum() / total) if total > 0 else float("nan")


def frame_to_frame_turns(frames: np.ndarray, poses: np.ndarray, first: int = 1) -> dict:
    """On a long rollout: for every frame t >= first where the engine turned on the spot (moved
    under 1 map unit, pitch unchanged, yaw by 2° to 40°), the implied turn from frame t − 1 to t of
    `frames` [N, H, W, 3] beside the engine's (poses [N, 5]). Returns {"frames": [t...],
    "engine_deg": [...], "implied_deg": [...], "turn_followed": followed_share}: does the picture
    still turn when the player turns, however it looks by then."""
    poses = np.asarray(poses, np.float64)
    ts, engine, implied = [], [], []
    for t in range(max(first, 1), len(frames)):
        yaw = float(yaw_change(poses[t:t + 1], poses[t - 1])[0])
        moved = np.linalg.norm(poses[t, :3] - poses[t - 1, :3])
        if moved < 1.0 and abs(poses[t, 4] - poses[t - 1, 4]) < 0.5 and 2.0 <= abs(yaw) <= 40.0:
            ts.append(t)
            engine.append(yaw)
            implied.append(implied_yaw(frames[t - 1], frames[t]))
    return {"frames": ts, "engine_deg": engine, "implied_deg": implied,
            "turn_followed": followed_share(implied, engine) if ts else None}
