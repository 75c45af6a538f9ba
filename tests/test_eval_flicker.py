"""Temporal stability: where the engine's view stands still, a generated view that is redrawn
with new noise every block shimmers, and one that stays put does not."""

import numpy as np
import pytest

from worldmodel.eval.flicker import temporal_stability


def still_scene(frames=12, seed=0):
    rng = np.random.default_rng(seed)
    view = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return np.repeat(view[None], frames, 0)


def test_a_view_kept_still_is_stable_and_one_redrawn_every_block_jumps_across_blocks():
    truth = still_scene()
    bf = 3
    kept = truth.copy()
    redrawn = truth.copy()
    rng = np.random.default_rng(1)
    for b in range(0, len(truth), bf):  # each block the same noisy picture, another one per block
        noise = rng.integers(-20, 21, truth.shape[1:])
        redrawn[b:b + bf] = np.clip(truth[0].astype(int) + noise, 0, 255).astype(np.uint8)
    stable = temporal_stability(kept, truth, bf, first=bf)
    jumpy = temporal_stability(redrawn, truth, bf, first=bf)
    assert stable["still_pairs"] == jumpy["still_pairs"] == len(truth) - 1 - bf
    assert stable["frame_to_frame_psnr"] == stable["within_block_psnr"] == stable["across_blocks_psnr"] == 60.0
    assert jumpy["within_block_psnr"] == 60.0  # the same picture inside a block
    assert jumpy["across_blocks_psnr"] < 30.0  # a new one at every boundary
    assert jumpy["frame_to_frame_psnr"] < stable["frame_to_frame_psnr"]


def test_only_pairs_where_the_engine_stood_still_count():
    truth = still_scene(9)
    truth[5:] = still_scene(4, seed=3)  # the view changes at frame 5
    r = temporal_stability(truth, truth, 3)
    assert r["still_pairs"] == 7  # 8 pairs, one of them across the change
    moving = np.stack([still_scene(1, seed=s)[0] for s in range(6)])
    none = temporal_stability(moving, moving, 3)
    assert none["still_pairs"] == 0 and none["frame_to_frame_psnr"] is None


def test_mismatched_videos_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        temporal_stability(still_scene(6), still_scene(7), 3)


def test_videos_longer_than_one_chunk_count_every_pair():
    truth = still_scene(600)
    r = temporal_stability(truth, truth, 3)
    assert r["still_pairs"] == 599 and r["frame_to_frame_psnr"] == 60.0
