"""Revisit check: when the camera comes back near a pose held in memory after being away, score
the new frame against what the session remembers of that place.

For every memory slot the checker keeps the frame that was produced at the slot's frame index
(generated, or observed from the engine) and whether the camera has left that place since.
A *revisit* is a step whose last pose is near a slot's pose (within NEAR_DISTANCE map units and
NEAR_ANGLE degrees of yaw) while that slot is marked as left. The report compares the block's last
frame with (a) the frame produced at the remembered pose and (b), when decoding is on, the
memory's own view of the slot (EngineSession.decode_slot). Both with PSNR (dB) and SSIM.

Bounded: at most one frame per memory slot is kept; frames of evicted slots are dropped.
"""

from __future__ import annotations

import numpy as np
import torch

from worldmodel.metrics import psnr, ssim

NEAR_DISTANCE = 48.0  # map units; a Doom corridor is ~128 wide, the player radius 16
NEAR_ANGLE = 20.0  # degrees of yaw; the view is 90° wide, so most of it is shared


def angle_difference(a, b):
    """Smallest absolute difference of two yaws in degrees, in [0, 180]."""
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) % 360.0
    return np.minimum(d, 360.0 - d)


def score(new: np.ndarray, old: np.ndarray) -> dict:
    """new, old: RGB uint8 [H, W, 3] -> {"psnr": dB (null when identical), "ssim": [-1, 1]}."""
    a = torch.from_numpy(np.ascontiguousarray(new)).permute(2, 0, 1)
    b = torch.from_numpy(np.ascontiguousarray(old)).permute(2, 0, 1)
    p = float(psnr(a, b))
    return {"psnr": round(p, 3) if np.isfinite(p) else None, "ssim": round(float(ssim(a, b)), 4)}


class RevisitChecker:
    def __init__(self, decode: bool = True, near_distance: float = NEAR_DISTANCE, near_angle: float = NEAR_ANGLE):
        self.decode = decode
        self.near_distance = near_distance
        self.near_angle = near_angle
        self.frames: dict[int, np.ndarray] = {}  # frame index -> RGB uint8 [H, W, 3]
        self.left: dict[int, bool] = {}  # frame index -> camera has been away since

    def record(self, first_frame: int, frames: np.ndarray, slots: list[dict]) -> None:
        """Keep the frames that memory now holds; drop the ones memory no longer holds.

        first_frame: absolute index of frames[0]; frames [F, H, W, 3]; slots: memory_state()["slots"].
        """
        held = {s["frame"] for s in slots}
        for i, frame in enumerate(frames):
            if first_frame + i in held:
                self.frames[first_frame + i] = frame.copy()
                self.left[first_frame + i] = False
        for f in list(self.frames):
            if f not in held:
                del self.frames[f], self.left[f]

    def check(self, pose: np.ndarray, frame: np.ndarray, frame_index: int, slots: list[dict], decode_slot) -> dict | None:
        """Call after `record` for a new block: pose [P] and frame [H, W, 3] of its last frame.

        decode_slot(slot) -> [B, H, W, 3] uint8. Returns the revisit report, or None."""
        best = None
        for s in slots:
            f = s["frame"]
            if f not in self.frames or f >= frame_index:
                continue
            p = np.asarray(s["pose"], np.float64)
            dist = float(np.hypot(*(p[:2] - pose[:2])))
            dang = float(angle_difference(p[3], pose[3]))
            near = dist <= self.near_distance and dang <= self.near_angle
            if not near:
                self.left[f] = True
                continue
            if self.left[f] and (best is None or (dist, dang) < best[1:3]):
                best = (s, dist, dang)
            self.left[f] = False  # report a place once per return, not on every block spent there
        if best is None:
            return None
        s, dist, dang = best
        report = {
            "slot": s["slot"],
            "remembered_frame": s["frame"],
            "frames_away": frame_index - s["frame"],
            "pose_distance": round(dist, 3),
            "angle_difference": round(dang, 3),
            "vs_remembered_frame": score(frame, self.frames[s["frame"]]),
            "vs_memory_decoded": None,
        }
        if self.decode:
            report["vs_memory_decoded"] = score(frame, decode_slot(s["slot"])[-1])
        return report
