"""HUD bookkeeping: measured frame rate, memory against a full cache, revisit display."""

import numpy as np
import pytest

from game.connection import StepResult
from game.hud import REVISIT_SHOW_FRAMES, Stats, history_line, memory_line, quality_color, GREEN, RED, YELLOW


def result(first, revisit=None, used=None, frames_per_slot=3.0, oldest=0, capacity=48):
    used = first // 3 + 1 if used is None else used  # mag: one slot per block
    return StepResult(frames=np.zeros((3, 2, 2, 3), np.uint8), poses=np.zeros((3, 5), np.float32),
                      first_frame=first, next_frame=first + 3, revisit=revisit, memory_used=used,
                      memory_capacity=capacity, bytes_held=used * 1000, frames_per_slot=frames_per_slot,
                      oldest_frame=oldest, model_ms=5.0, latency_ms=6.0)


def test_generated_rate_is_frames_over_wall_time():
    s = Stats(bytes_per_slot=1000)
    assert s.generated_fps() is None
    for i in range(5):  # a block of 3 frames every 0.5 s
        s.block(result(3 + 3 * i), now=10.0 + 0.5 * i)
    assert s.generated_fps() == pytest.approx(6.0)


def test_memory_is_compared_with_a_full_cache_of_the_same_frames():
    s = Stats(bytes_per_slot=1000)
    s.block(result(15))  # 6 mag slots, each standing for a block of 3 frames
    assert s.frames_held == 18 and s.full_cache_bytes == 18 * 1000 and s.bytes_held == 6 * 1000
    assert "6/48 slots (mag) · 5.9 KiB held, 3.0× smaller than a full cache of its 18 frames (17.6 KiB)" \
        in memory_line(s, "mag")
    # Long after the memory filled up the ratio stays what the method promises; it does not grow
    # with the history, which is shown apart: how far back the oldest slot is.
    s.block(result(3000, used=48, oldest=12))
    assert "48/48 slots (mag) · 46.9 KiB held, 3.0× smaller than a full cache of its 144 frames" in memory_line(s, "mag")
    assert history_line(s, 17.5).startswith("frame 3003 · memory reaches back 2991 frames (170.9 s) · revisits 0")
    # A full cache is no smaller than itself; a memory that writes nothing reaches nowhere.
    s.block(result(30, used=11, frames_per_slot=1.0))
    assert memory_line(s, "full").endswith("10.7 KiB held, as much as a full cache of its 11 frames (10.7 KiB)")
    s.block(result(30, used=0, frames_per_slot=None, oldest=None, capacity=0))
    assert memory_line(s, "none") == "memory 0/0 slots (none) · 0 B held"
    assert "memory empty" in history_line(s, 17.5)


def test_the_memory_lines_fit_the_narrowest_window():
    import pygame

    from game import hud
    from game.connection import ModelInfo

    fonts = hud.Fonts()
    info = ModelInfo("doom-cpu", "cpu", "torch", 3, 120, 160, 17.5, 64, 48, 460800, "mag")
    s = Stats(bytes_per_slot=info.bytes_per_slot, revisits=3)
    s.block(result(1500, used=48, oldest=3))
    surface = pygame.Surface((760, hud.bar_height(fonts)))  # the explorer's narrowest window
    hud.draw_bar(surface, fonts, surface.get_rect(), s, info, {"source": "engine freedoom2.wad:MAP01"})
    lines = [memory_line(s, "mag"), history_line(s, info.fps)]
    assert all(fonts.small.size(line)[0] <= 760 - 10 for line in lines), [fonts.small.size(l) for l in lines]


def test_revisit_stays_on_screen_for_a_while_of_frames():
    s = Stats()
    s.revisit_shown({"slot": 1, "frames_away": 30, "vs_remembered_frame": {"psnr": 30.0, "ssim": 0.9}}, 100)
    assert s.showing_revisit(100) and s.showing_revisit(100 + REVISIT_SHOW_FRAMES - 1)
    assert not s.showing_revisit(100 + REVISIT_SHOW_FRAMES)
    s.revisit_shown({"error": "decode failed"}, 200)  # a failed check is not a revisit
    assert s.revisits == 1


def test_quality_colours():
    assert quality_color(30) == GREEN and quality_color(20) == YELLOW and quality_color(10) == RED
