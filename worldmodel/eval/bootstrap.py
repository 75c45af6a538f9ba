"""Paired bootstrap over cases: how sure is a difference between two methods scored on the same frames?

Frames of one case are correlated (neighbouring frames of one return), so the unit resampled is
the case, never the frame. Both weightings are reported, as they answer different questions:
the per-frame mean (every scored frame counts once; long cases weigh more) and the per-case mean
(every case counts once).
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000


def paired_bootstrap(a: list[np.ndarray], b: list[np.ndarray], resamples: int = RESAMPLES, seed: int = 0,
                     level: float = 0.95) -> dict:
    """a[c], b[c]: the per-frame scores of case c under methods A and B, on the same frames
    (equal lengths per case; cases without frames are left out). Returns the differences A - B
    of the per-frame and the per-case means with `level` percentile intervals, and in how many
    cases A's mean is above B's."""
    pairs = [(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in zip(a, b, strict=True)]
    for x, y in pairs:
        if x.shape != y.shape:
            raise ValueError(f"paired scores must cover the same frames, got {x.shape} and {y.shape}")
    pairs = [(x, y) for x, y in pairs if len(x)]
    if not pairs:
        raise ValueError("no case has frames to compare")
    sums = np.array([(x - y).sum() for x, y in pairs])
    counts = np.array([len(x) for x, _ in pairs], np.float64)
    means = sums / counts
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pairs), (resamples, len(pairs)))
    frame = sums[idx].sum(1) / counts[idx].sum(1)
    case = means[idx].mean(1)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {"frame_mean_diff": float(sums.sum() / counts.sum()),
            "frame_interval": [float(v) for v in np.percentile(frame, q)],
            "case_mean_diff": float(means.mean()),
            "case_interval": [float(v) for v in np.percentile(case, q)],
            "cases_ahead": int((means > 0).sum()), "cases": len(pairs), "frames": int(counts.sum()),
            "level": level}
