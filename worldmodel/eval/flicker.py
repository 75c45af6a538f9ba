"""Does a view that should stand still shimmer? Temporal stability of a generated video.

Where the engine's frame t equals its frame t-1 (to STILL_DB: the camera did not move and
nothing in view animated), a stable model's frame t equals its frame t-1 too. The PSNR between
consecutive generated frames there measures shimmer, which a PSNR against the engine misses:
a blurry frame redrawn with new noise every block scores the same against the truth as a
blurry frame kept still, but only the first is visible as flicker. Split by where the pair
falls: inside a block (frames denoised together) or across a block boundary (new noise, and the
memory write between), where a frame-autoregressive model jumps if it jumps anywhere.
"""

from __future__ import annotations

import numpy as np

from worldmodel.eval.counterfactual import frame_psnr

STILL_DB = 45.0  # consecutive engine frames at least this close count as a still view


def temporal_stability(generated: np.ndarray, truth: np.ndarray, block_frames: int, first: int = 0) -> dict:
    """generated, truth: uint8 [F, H, W, 3] of the same actions; frames before `first` (the observed
    context) are left out. Returns the number of still pairs and the generated frames' PSNR
    frame to frame over them, all / inside a block / across a block boundary (None where none)."""
    if generated.shape != truth.shape:
        raise ValueError(f"generated {generated.shape} and true {truth.shape} frames differ in shape")
    engine, model = frame_psnr(truth[1:], truth[:-1]), frame_psnr(generated[1:], generated[:-1])  # pair (t-1, t)
    t = np.arange(1, len(truth))  # pair (t-1, t)
    still = (engine >= STILL_DB) & (t > first)
    boundary = t % block_frames == 0  # frame t starts a block
    mean = lambda sel: float(model[sel].mean()) if sel.any() else None  # noqa: E731
    return {"still_pairs": int(still.sum()), "still_db": STILL_DB,
            "frame_to_frame_psnr": mean(still),
            "within_block_psnr": mean(still & ~boundary),
            "across_blocks_psnr": mean(still & boundary)}
