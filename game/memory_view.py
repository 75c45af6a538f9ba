"""The memory view (M): what the runtime's compressed memory holds, decoded back to pixels.

Each slot holds the K/V of one frame; the runtime decodes it (the memory model denoising a block
that may see only that slot) and the view shows the slot's frame with the pose it was written at.
Decoding costs a model call per slot, so slots are decoded one per frame while the view is open,
and a decoded slot is kept until the slot is overwritten.
"""

from __future__ import annotations

import math

import numpy as np
import pygame

from game.hud import GREY, WHITE, YELLOW, Fonts, text


class MemoryView:
    def __init__(self):
        self.slots: list[dict] = []  # {"slot", "frame", "pose"}, oldest first
        self.images: dict[tuple[int, int], np.ndarray] = {}  # (slot, frame) -> [H, W, 3] uint8

    def update_slots(self, slots: list[dict]) -> None:
        self.slots = slots
        held = {(s["slot"], s["frame"]) for s in slots}
        self.images = {k: v for k, v in self.images.items() if k in held}

    def next_to_decode(self) -> dict | None:
        """The newest slot not decoded yet (the newest are the ones a player just saw)."""
        for s in reversed(self.slots):
            if (s["slot"], s["frame"]) not in self.images:
                return s
        return None

    def add(self, slot: dict, frames: np.ndarray) -> None:
        self.images[(slot["slot"], slot["frame"])] = frames[-1]

    def draw(self, surface, fonts: Fonts, area: pygame.Rect) -> None:
        shade = pygame.Surface(area.size, pygame.SRCALPHA)
        shade.fill((0, 0, 0, 225))
        surface.blit(shade, area.topleft)
        n = len(self.slots)
        done = sum(1 for s in self.slots if (s["slot"], s["frame"]) in self.images)
        text(surface, fonts.large, f"memory: {n} slots, {done} decoded (M closes)", (area.x + 12, area.y + 8))
        if not n:
            return
        top = area.y + 14 + fonts.large.get_linesize()
        label_h = 2 * fonts.small.get_linesize()
        cols = max(1, math.ceil(math.sqrt(n * area.width / max(1, area.height - top + area.y))))
        cell_w = (area.width - 12) // cols
        rows = math.ceil(n / cols)
        cell_h = (area.bottom - top) // max(1, rows)
        for i, s in enumerate(self.slots):
            x = area.x + 6 + (i % cols) * cell_w
            y = top + (i // cols) * cell_h
            img = self.images.get((s["slot"], s["frame"]))
            box = pygame.Rect(x + 3, y, cell_w - 6, max(8, cell_h - label_h - 4))
            if img is not None:
                h, w = img.shape[:2]
                k = min(box.width / w, box.height / h)
                surf = pygame.surfarray.make_surface(np.ascontiguousarray(img.swapaxes(0, 1)))
                surf = pygame.transform.scale(surf, (max(1, int(w * k)), max(1, int(h * k))))
                surface.blit(surf, surf.get_rect(center=box.center))
            else:
                pygame.draw.rect(surface, (60, 60, 60), box, 1)
                text(surface, fonts.small, "decoding…", (box.x + 4, box.y + 4), GREY)
            p = s["pose"]
            text(surface, fonts.small, f"slot {s['slot']} · frame {s['frame']}", (x + 3, box.bottom + 2), YELLOW)
            text(surface, fonts.small, f"({p[0]:.0f}, {p[1]:.0f}) {p[3]:.0f}°",
                 (x + 3, box.bottom + 2 + fonts.small.get_linesize()), WHITE)
