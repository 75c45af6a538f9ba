"""HUD bookkeeping: measured frame rate, memory against a full cache, revisit display."""

import numpy as np
import pytest

from game.connection import StepResult
from game.hud import REVISIT_SHOW_FRAMES, Stats, quality_color, GREEN, RED, YELLOW


def result(first, revisit=None):
    return StepResult(frames=np.zeros((3, 2, 2, 3), np.uint8), poses=np.zeros((3, 5), np.float32),
                      first_frame=first, next_frame=first + 3, revisit=revisit, memory_used=first // 3 + 1,
                      memory_capacity=48, bytes_held=(first // 3 + 1) * 1000, model_ms=5.0, latency_ms=6.0)


def test_generated_rate_is_frames_over_wall_time():
    s = Stats(bytes_per_slot=1000)
    assert s.generated_fps() is None
    for i in range(5):  # a block of 3 frames every 0.5 s
        s.block(result(3 + 3 * i), now=10.0 + 0.5 * i)
    assert s.generated_fps() == pytest.approx(6.0)
    # A full cache keeps every frame (18 by now); the compressed memory one slot per block.
    assert s.full_cache_bytes == 18 * 1000 and s.bytes_held == 6 * 1000


def test_revisit_stays_on_screen_for_a_while_of_frames():
    s = Stats()
    s.revisit_shown({"slot": 1, "frames_away": 30, "vs_remembered_frame": {"psnr": 30.0, "ssim": 0.9}}, 100)
    assert s.showing_revisit(100) and s.showing_revisit(100 + REVISIT_SHOW_FRAMES - 1)
    assert not s.showing_revisit(100 + REVISIT_SHOW_FRAMES)
    s.revisit_shown({"error": "decode failed"}, 200)  # a failed check is not a revisit
    assert s.revisits == 1


def test_quality_colours():
    assert quality_color(30) == GREEN and quality_color(20) == YELLOW and quality_color(10) == RED
