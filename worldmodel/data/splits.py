"""The committed map split (`splits.json`): which maps train, which are held out, and scene ids.

A map is named `"<wad>:<map>"`, e.g. `"freedoom2.wad:MAP01"`; its scene id is its index in the
single ordered list `maps` (always < 64).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SPLITS_PATH = Path(__file__).with_name("splits.json")
MAX_SCENES = 64


@lru_cache(maxsize=1)
def load_splits() -> dict:
    d = json.loads(SPLITS_PATH.read_text())
    assert len(d["maps"]) <= MAX_SCENES, "scene ids must stay below 64"
    assert set(d["heldout"]) <= set(d["maps"])
    return d


def all_maps() -> list[str]:
    return list(load_splits()["maps"])


def heldout_maps() -> list[str]:
    return list(load_splits()["heldout"])


def train_maps() -> list[str]:
    held = set(heldout_maps())
    return [m for m in all_maps() if m not in held]


def scene_id(map_name: str) -> int:
    """Scene id of `"<wad>:<map>"`; -1 for a map outside the committed list (e.g. a user's own)."""
    try:
        return all_maps().index(map_name)
    except ValueError:
        return -1


def split_of(map_name: str) -> str | None:
    """`"train"`, `"heldout"`, or None for a map outside the committed list."""
    if map_name in heldout_maps():
        return "heldout"
    return "train" if map_name in all_maps() else None


def parse_map(map_name: str) -> tuple[str, str]:
    """`"freedoom2.wad:MAP01"` -> (`"freedoom2.wad"`, `"MAP01"`)."""
    if ":" not in map_name:
        raise ValueError(f"map {map_name!r} must be written <wad>:<map>, e.g. freedoom2.wad:MAP01")
    wad, name = map_name.split(":", 1)
    return wad, name.upper()
