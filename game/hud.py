"""What the explorer measures and writes on screen: frame rate, latency, memory, revisits, PSNR.

`Stats` is plain bookkeeping (testable without a window); `draw_*` render it with pygame.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pygame

from game.keymap import HELP_LINES

WHITE, GREY, DIM = (235, 235, 235), (170, 170, 170), (110, 110, 110)
GREEN, YELLOW, RED = (90, 220, 110), (240, 200, 60), (235, 80, 70)
BAR_BG = (18, 18, 22)
REVISIT_SHOW_FRAMES = 36  # how long a revisit stays on screen: ~2 s of the model's frames
FPS_BLOCKS = 8  # the generated frame rate is measured over the last few blocks


def quality_color(psnr_db: float | None):
    """Green for a close match, yellow for a fair one, red for a poor one (PSNR in dB)."""
    if psnr_db is None or math.isinf(psnr_db):
        return GREEN
    return GREEN if psnr_db >= 25 else YELLOW if psnr_db >= 18 else RED


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@dataclass
class Stats:
    arrivals: deque = field(default_factory=lambda: deque(maxlen=FPS_BLOCKS + 1))  # (time, frames)
    latency_ms: float | None = None
    model_ms: float | None = None
    next_frame: int = 0
    memory_used: int = 0
    memory_capacity: int = 0
    bytes_held: int = 0
    bytes_per_slot: int = 0
    frames_per_slot: float | None = None
    oldest_frame: int | None = None
    pose: tuple | None = None
    revisit: dict | None = None
    revisit_at: int = -10**9  # frames shown when it appeared
    revisits: int = 0
    truth_psnr: float | None = None
    truth_psnr_sum: float = 0.0
    truth_frames: int = 0
    error: str | None = None

    def block(self, result, now: float | None = None) -> None:
        """Book a StepResult (game/connection.py)."""
        now = time.monotonic() if now is None else now
        self.arrivals.append((now, len(result.frames)))
        self.latency_ms, self.model_ms = result.latency_ms, result.model_ms
        self.next_frame = result.next_frame
        self.memory_used, self.memory_capacity, self.bytes_held = (
            result.memory_used, result.memory_capacity, result.bytes_held)
        self.frames_per_slot, self.oldest_frame = result.frames_per_slot, result.oldest_frame
        self.pose = tuple(float(v) for v in result.poses[-1])
        self.error = None

    def revisit_shown(self, report: dict, frames_shown: int) -> None:
        """A revisit report reached the screen (with the last frame of its block)."""
        if "error" not in report:
            self.revisit, self.revisit_at = report, frames_shown
            self.revisits += 1

    def generated_fps(self) -> float | None:
        """Frames generated per second of wall time over the last FPS_BLOCKS blocks (None: too few)."""
        if len(self.arrivals) < 2:
            return None
        span = self.arrivals[-1][0] - self.arrivals[0][0]
        return sum(n for _, n in list(self.arrivals)[1:]) / span if span > 0 else None

    @property
    def frames_held(self) -> int | None:
        """Frames of history the held slots stand for (mag: B per slot); None if the server does not say."""
        return None if self.frames_per_slot is None else round(self.memory_used * self.frames_per_slot)

    @property
    def full_cache_bytes(self) -> int | None:
        """What a cache keeping every frame's K/V (Self Forcing) would need for the same frames.
        Not for the whole history: no strategy holds that, so the ratio would grow without limit."""
        return None if self.frames_held is None else self.frames_held * self.bytes_per_slot

    @property
    def history_frames(self) -> int | None:
        """How far back the memory reaches: frames from its oldest slot to now (None: empty)."""
        return None if self.oldest_frame is None else self.next_frame - self.oldest_frame

    def truth(self, value: float) -> None:
        self.truth_psnr = value
        if math.isfinite(value):
            self.truth_psnr_sum += value
            self.truth_frames += 1

    @property
    def truth_psnr_mean(self) -> float | None:
        return self.truth_psnr_sum / self.truth_frames if self.truth_frames else None

    def showing_revisit(self, frames_shown: int) -> bool:
        return self.revisit is not None and frames_shown - self.revisit_at < REVISIT_SHOW_FRAMES


class Fonts:
    def __init__(self, size: int = 17):
        pygame.font.init()
        self.small = pygame.font.Font(None, size)
        self.large = pygame.font.Font(None, int(size * 1.5))


def text(surface, font, s: str, pos, color=WHITE, shadow: bool = True) -> pygame.Rect:
    if shadow:
        surface.blit(font.render(s, True, (0, 0, 0)), (pos[0] + 1, pos[1] + 1))
    return surface.blit(font.render(s, True, color), pos)


def draw_bar(surface, fonts: Fonts, rect: pygame.Rect, stats: Stats, info, flags: dict) -> None:
    """The HUD strip. flags: paused, recording (seconds or None), source, truth (bool)."""
    pygame.draw.rect(surface, BAR_BG, rect)
    f, x, y, lh = fonts.small, rect.x + 10, rect.y + 6, fonts.small.get_linesize() + 2
    fps = stats.generated_fps()
    lat = "–" if stats.latency_ms is None else f"{stats.latency_ms:.0f} ms"
    model = "" if stats.model_ms is None else f" (model {stats.model_ms:.0f} ms)"
    line1 = (f"{info.model} · {info.backend}/{info.device} · generated {'–' if fps is None else f'{fps:.1f}'} "
             f"frames/s (target {info.fps:g}) · step latency {lat}{model}")
    text(surface, f, line1, (x, y))
    text(surface, f, memory_line(stats, info.strategy), (x, y + lh), GREY)
    text(surface, f, history_line(stats, info.fps), (x, y + 2 * lh), GREY)
    line4 = "pose –" if stats.pose is None else (
        f"pose x {stats.pose[0]:.0f} y {stats.pose[1]:.0f} angle {round(stats.pose[3]) % 360}° pitch {round(stats.pose[4])}°")
    line4 += f" · start: {flags.get('source', '?')}"
    if flags.get("truth"):
        m = stats.truth_psnr_mean
        line4 += f" · truth PSNR {_db(stats.truth_psnr)} (mean {_db(m)})"
    text(surface, f, line4, (x, y + 3 * lh), GREY)
    status = "F1 help · M memory · V record · P pause · R reset · Esc quit"
    if flags.get("paused"):
        status = "PAUSED — N steps one block, P resumes · " + status
    if stats.error:
        text(surface, f, f"runtime: {stats.error}"[:160], (x, y + 4 * lh), RED)
    else:
        text(surface, f, status, (x, y + 4 * lh), YELLOW if flags.get("paused") else DIM)


def memory_line(stats: Stats, strategy: str) -> str:
    """Bytes held against a full cache of the same frames: the ratio that compares like with like."""
    s = f"memory {stats.memory_used}/{stats.memory_capacity} slots ({strategy}) · {human_bytes(stats.bytes_held)} held"
    full = stats.full_cache_bytes
    if full and stats.bytes_held:
        r = full / stats.bytes_held
        than = f"a full cache of its {stats.frames_held} frames ({human_bytes(full)})"
        s += (f", {r:.1f}× smaller than {than}" if r >= 1.05 else f", {1 / r:.1f}× larger than {than}"
              if r <= 0.95 else f", as much as {than}")
    return s


def history_line(stats: Stats, fps: float) -> str:
    """Where the session is, how far back its memory reaches, and the revisits so far."""
    s = f"frame {stats.next_frame}"
    back = stats.history_frames
    s += " · memory empty" if back is None else f" · memory reaches back {back} frames ({back / fps:.1f} s)"
    s += f" · revisits {stats.revisits}"
    if stats.revisit is not None:
        s += f" (last {_db((stats.revisit.get('vs_remembered_frame') or {}).get('psnr'))})"
    return s


def _db(v) -> str:
    if v is None:
        return "–"
    return "∞ dB" if math.isinf(v) else f"{v:.1f} dB"


def bar_height(fonts: Fonts) -> int:
    return 5 * (fonts.small.get_linesize() + 2) + 12


def draw_revisit(surface, fonts: Fonts, rect: pygame.Rect, stats: Stats) -> None:
    """Border and banner over the dream panel while a revisit is on screen."""
    r = stats.revisit
    vs = (r.get("vs_remembered_frame") or {})
    dec = r.get("vs_memory_decoded") or {}
    color = quality_color(vs.get("psnr"))
    pygame.draw.rect(surface, color, rect.inflate(8, 8), 4)
    msg = (f"REVISIT slot {r.get('slot')} · {r.get('frames_away')} frames ago · "
           f"PSNR {_db(vs.get('psnr'))}, SSIM {vs.get('ssim', float('nan')):.2f} vs then")
    if dec:
        msg += f" · {_db(dec.get('psnr'))} vs memory"
    banner = fonts.small.render(msg, True, (0, 0, 0))
    box = banner.get_rect(midtop=(rect.centerx, rect.y + 6)).inflate(12, 6)
    pygame.draw.rect(surface, color, box)
    surface.blit(banner, banner.get_rect(center=box.center))


def draw_remembered(surface, fonts: Fonts, rect: pygame.Rect, report: dict, frame: np.ndarray) -> None:
    """The memory's decoded view of the revisited slot, [H, W, 3] uint8, as an inset a third of the
    dream panel's size in its lower right corner, so the remembered place and the new view are side
    by side."""
    w, h = rect.width // 3, rect.height // 3
    box = pygame.Rect(rect.right - w - 8, rect.bottom - h - 8 - fonts.small.get_linesize(), w, h)
    surf = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
    pygame.draw.rect(surface, quality_color((report.get("vs_memory_decoded") or {}).get("psnr")), box.inflate(6, 6), 3)
    surface.blit(pygame.transform.scale(surf, box.size), box)
    label = fonts.small.render(f"MEMORY slot {report.get('slot')}, decoded", True, WHITE)
    surface.blit(label, label.get_rect(bottomright=(box.right, box.y - 4)))


def draw_label(surface, fonts: Fonts, rect: pygame.Rect, label: str, color=WHITE) -> None:
    text(surface, fonts.small, label, (rect.x + 6, rect.bottom - fonts.small.get_linesize() - 4), color)


def draw_recording(surface, fonts: Fonts, seconds: float) -> None:
    w = surface.get_width()
    pygame.draw.circle(surface, RED, (w - 92, 18), 7)
    text(surface, fonts.small, f"REC {int(seconds) // 60:02d}:{int(seconds) % 60:02d}", (w - 80, 11), RED)


def draw_help(surface, fonts: Fonts) -> None:
    shade = pygame.Surface(surface.get_size(), pygame.SRCALPHA)
    shade.fill((0, 0, 0, 200))
    surface.blit(shade, (0, 0))
    lh = fonts.small.get_linesize() + 4
    x, y = 40, 30
    text(surface, fonts.large, "magworld explorer — keys", (x, y))
    y += fonts.large.get_linesize() + 8
    for key, what in HELP_LINES:
        text(surface, fonts.small, key, (x, y), YELLOW)
        text(surface, fonts.small, what, (x + 190, y))
        y += lh
    y += 8
    text(surface, fonts.small, "The frames are generated by the model; nothing here is rendered by an engine,",
         (x, y), GREY)
    text(surface, fonts.small, "except the TRUTH panel in --truth mode (the real ViZDoom on the same actions).",
         (x, y + lh), GREY)
