"""The memory view (M): what the runtime's compressed memory holds, decoded back to pixels.

Each slot holds the K/V of one frame; the runtime decodes it (the memory model denoising a block
that may see only that slot) and the view shows the slot's frame with the pose it was written at.
Decoding costs a model call per slot, so the explorer decodes one slot at a time on its worker
thread while the view is open (the title counts them: "decoded 7/19"), and a decoded slot is kept
until the slot is overwritten, also while the view is closed.

Layout: a grid whose cells are at least as wide as the widest slot label and tall enough for the
label under a picture; among such grids the one with the largest pictures wins. When even the
smallest pictures leave no room for every slot, the newest slots are shown and the title says how
many, so labels never run into each other whatever the window size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pygame

from game.hud import GREY, WHITE, YELLOW, Fonts, text

PAD = 3  # pixels around a cell's picture and label
MIN_PICTURE = 30  # pixels high (a quarter of a 120-row frame): smaller shows nothing; show fewer slots


@dataclass
class Cell:
    slot: dict  # {"slot", "frame", "pose"}
    picture: pygame.Rect  # where the decoded frame goes (aspect kept inside it)
    labels: list[tuple[str, pygame.Rect]]  # each label line and the rect it is drawn in


def labels(slot: dict) -> list[str]:
    p = slot["pose"]
    return [f"slot {slot['slot']} · frame {slot['frame']}", f"({p[0]:.0f}, {p[1]:.0f}) {p[3]:.0f}°"]


def grid(n: int, width: int, height: int, label_w: int, label_h: int, aspect: float) -> tuple[int, int, int] | None:
    """(columns, rows, picture height) for n cells in width x height pixels with labels of
    label_w x label_h under each picture (aspect = picture width / height); the grid with the
    largest pictures, or None when n cells cannot all be shown."""
    best, best_scale = None, 0.0
    for cols in range(1, n + 1):
        cell_w = width // cols
        if cell_w < label_w + 2 * PAD:
            break  # more columns are only narrower
        rows = math.ceil(n / cols)
        pic_h = height // rows - label_h - 2 * PAD
        pic_w = cell_w - 2 * PAD
        scale = min(pic_w / aspect, pic_h)  # the height a picture of this aspect gets
        if scale < MIN_PICTURE:
            continue
        if scale > best_scale:
            best, best_scale = (cols, rows, pic_h), scale
    return best


class MemoryView:
    def __init__(self):
        self.slots: list[dict] = []  # {"slot", "frame", "pose"}, oldest first
        self.images: dict[tuple[int, int], np.ndarray] = {}  # (slot, frame) -> [H, W, 3] uint8
        self.decoding: dict | None = None  # the slot whose decode is in flight

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
        if self.decoding is slot:
            self.decoding = None

    @property
    def decoded(self) -> int:
        return sum(1 for s in self.slots if (s["slot"], s["frame"]) in self.images)

    def titles(self, shown: int) -> list[str]:
        """The progress line, longest first ("memory: 19 slots · decoded 7/19 · decoding slot 12…
        · M closes"), then shorter forms for narrow windows."""
        n = len(self.slots)
        s = f"memory: {n} slots · decoded {self.decoded}/{n}"
        more = f" · showing the newest {shown} (a larger window shows all)" if shown < n else ""
        busy = f" · decoding slot {self.decoding['slot']}…" if self.decoding is not None else ""
        return [s + busy + more + " · M closes", s + (f" · newest {shown} shown" if shown < n else ""),
                f"decoded {self.decoded}/{n}" + (f" · {shown} shown" if shown < n else "")]

    def layout(self, fonts: Fonts, area: pygame.Rect, frame_size: tuple[int, int]) -> list[Cell]:
        """The cells of the slots shown in `area` (below the title); frame_size = (width, height)."""
        top = area.y + 14 + fonts.large.get_linesize()
        width, height = area.width - 2 * PAD, area.bottom - top
        lines = [labels(s) for s in self.slots]
        line_h = fonts.small.get_linesize()
        label_w = max((fonts.small.size(t)[0] for ls in lines for t in ls), default=0)
        label_h = 2 * line_h
        aspect = frame_size[0] / frame_size[1]
        shown, fit = len(self.slots), None
        while shown and (fit := grid(shown, width, height, label_w, label_h, aspect)) is None:
            shown -= 1
        if not shown:
            return []
        cols, rows, pic_h = fit
        cell_w, cell_h = width // cols, height // rows
        cells = []
        first = len(self.slots) - shown
        for i, (s, ls) in enumerate(zip(self.slots[first:], lines[first:])):
            x, y = area.x + PAD + (i % cols) * cell_w, top + (i // cols) * cell_h
            k = min((cell_w - 2 * PAD) / frame_size[0], pic_h / frame_size[1])
            picture = pygame.Rect(0, 0, max(1, int(frame_size[0] * k)), max(1, int(frame_size[1] * k)))
            # The label sits right under its own picture (not at the cell's foot, where it would
            # read as the caption of the picture below it); picture and label centred in the cell.
            spare = cell_h - (picture.height + PAD + label_h)
            picture.midtop = (x + cell_w // 2, y + spare // 2)
            left = max(x + PAD, min(picture.x, x + cell_w - PAD - label_w))
            rects = [pygame.Rect(left, picture.bottom + PAD + j * line_h, fonts.small.size(t)[0], line_h)
                     for j, t in enumerate(ls)]
            cells.append(Cell(s, picture, list(zip(ls, rects))))
        return cells

    def draw(self, surface, fonts: Fonts, area: pygame.Rect, frame_size: tuple[int, int]) -> None:
        surface.fill((8, 8, 10), area)  # opaque: the dream's banner and border would show through
        cells = self.layout(fonts, area, frame_size)
        titles = self.titles(len(cells))
        title = next((t for t in titles if fonts.large.size(t)[0] <= area.width - 24), titles[-1])
        text(surface, fonts.large, title, (area.x + 12, area.y + 8))
        wait = fonts.small.render("decoding…", True, GREY)
        for cell in cells:
            img = self.images.get((cell.slot["slot"], cell.slot["frame"]))
            if img is not None:
                surf = pygame.surfarray.make_surface(np.ascontiguousarray(img.swapaxes(0, 1)))
                surface.blit(pygame.transform.scale(surf, cell.picture.size), cell.picture)
            else:
                pygame.draw.rect(surface, (60, 60, 60), cell.picture, 1)
                if wait.get_width() + 8 <= cell.picture.width and wait.get_height() + 8 <= cell.picture.height:
                    surface.blit(wait, (cell.picture.x + 4, cell.picture.y + 4))
            for (line, rect), color in zip(cell.labels, (YELLOW, WHITE)):
                text(surface, fonts.small, line, rect.topleft, color)
