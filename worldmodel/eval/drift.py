"""Drift of a long rollout (seed 2's metric): |m(first 15%) - m(last 15%)| for a per-frame
statistic m — sharpness (variance of the Laplacian) and colour (per-channel mean and std)."""

from __future__ import annotations

import numpy as np

CHUNK = 256  # frames per pass, as in worldmodel/metrics.py: a 10-minute rollout at once is GBs of float32


def _per_chunk(fn, frames: np.ndarray, width: tuple[int, ...] = ()) -> np.ndarray:
    """fn over at most CHUNK frames at a time, concatenated: [F, *width]."""
    parts = [fn(frames[i:i + CHUNK]) for i in range(0, len(frames), CHUNK)]
    return np.concatenate(parts) if parts else np.zeros((0, *width), np.float32)


def sharpness(frames: np.ndarray) -> np.ndarray:
    """uint8 [F, H, W, 3] -> variance of the 4-neighbour Laplacian of the grey image, [F]."""
    def part(f):
        g = f.astype(np.float32).mean(-1)
        lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
        return lap.reshape(len(f), -1).var(1)
    return _per_chunk(part, frames)


def colour_stats(frames: np.ndarray) -> np.ndarray:
    """[F, 6]: per-channel mean and std."""
    def part(f):
        f = f.astype(np.float32).reshape(len(f), -1, 3)
        return np.concatenate([f.mean(1), f.std(1)], 1)
    return _per_chunk(part, frames, (6,))


def drift(frames: np.ndarray, fraction: float = 0.15) -> dict:
    n = max(1, int(len(frames) * fraction))
    sh = sharpness(frames)
    col = colour_stats(frames)
    return {
        "sharpness_first": float(sh[:n].mean()), "sharpness_last": float(sh[-n:].mean()),
        "sharpness_drift": float(abs(sh[:n].mean() - sh[-n:].mean())),
        "colour_drift": float(np.abs(col[:n].mean(0) - col[-n:].mean(0)).mean()),
    }
