"""The memory view's layout: slot labels never overlap, whatever the window size; progress is counted."""

import itertools

import numpy as np
import pygame
import pytest

from game import hud
from game.memory_view import MIN_PICTURE, MemoryView

FRAME = (160, 120)  # the shipped models' frame (width, height)


def view(n):
    v = MemoryView()
    # Wide labels on purpose: large slot numbers, frame indices and negative coordinates.
    v.update_slots([{"slot": 40 + i, "frame": 12345 + 3 * i, "pose": [-1234.0 - i, -2345.0, 0.0, 359.0, 0.0]}
                    for i in range(n)])
    return v


@pytest.mark.parametrize("size", [(320, 200), (760, 520), (1000, 420), (1920, 1080)])
@pytest.mark.parametrize("n", [1, 7, 19, 48])
def test_labels_never_overlap_each_other_or_the_pictures(size, n):
    fonts = hud.Fonts()
    area = pygame.Rect((0, 0), size)
    v = view(n)
    cells = v.layout(fonts, area, FRAME)
    labels = [rect for c in cells for _, rect in c.labels]
    pictures = [c.picture for c in cells]
    for a, b in itertools.combinations(labels + pictures, 2):
        assert not a.colliderect(b), (size, n, a, b)
    for r in labels + pictures:
        assert area.contains(r), (size, n, r)
    for c in cells:  # each label is as wide as its text
        for line, rect in c.labels:
            assert rect.width == fonts.small.size(line)[0]
    # The slots shown are the newest ones, oldest first, all of them when the window is large.
    assert [c.slot for c in cells] == v.slots[len(v.slots) - len(cells):]
    if size == (1920, 1080):
        assert len(cells) == n
    if len(cells) < n:
        assert f"showing the newest {len(cells)}" in v.titles(len(cells))[0]
    surface = pygame.Surface(size)
    v.draw(surface, fonts, area, FRAME)  # draws what it laid out
    assert any(fonts.large.size(t)[0] <= size[0] - 24 for t in v.titles(len(cells)))  # a title that fits


def test_a_small_window_shows_fewer_slots_not_overlapping_ones():
    fonts = hud.Fonts()
    small = view(48).layout(fonts, pygame.Rect(0, 0, 320, 200), FRAME)
    large = view(48).layout(fonts, pygame.Rect(0, 0, 1920, 1080), FRAME)
    assert 0 < len(small) < 48 and len(large) == 48
    assert min(c.picture.height for c in small + large) >= MIN_PICTURE  # pictures you can see, not slivers


def test_progress_counts_decoded_slots():
    v = view(3)
    assert v.titles(3)[0] == "memory: 3 slots · decoded 0/3 · M closes"
    slot = v.next_to_decode()
    assert slot is v.slots[-1]  # the newest first
    v.decoding = slot
    assert v.titles(3)[0] == f"memory: 3 slots · decoded 0/3 · decoding slot {slot['slot']}… · M closes"
    v.add(slot, np.zeros((3, 120, 160, 3), np.uint8))
    assert v.titles(3)[0] == "memory: 3 slots · decoded 1/3 · M closes" and v.next_to_decode() is v.slots[1]
    v.update_slots(v.slots[:2])  # the decoded slot was overwritten: its picture goes
    assert v.decoded == 0
