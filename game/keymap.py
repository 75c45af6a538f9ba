"""The one place where keys become actions (documented in docs/explorer.md).

Keys are named as `pygame.key.name` names them ("w", "left", "page up", "left alt", "f1"), so a
scripted run and a person at the keyboard drive the explorer the same way. Held keys give one
action row per frame, `[ACTION_DIM]` float32 in the units of worldmodel/actions.py; command keys
act once, when they go down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldmodel.actions import ACTION_DIM, ACTION_HIGH, ACTION_LOW, ACTION_NAMES

TURN, LOOK, FORWARD, STRAFE = (ACTION_NAMES.index(n) for n in ("turn", "look", "forward", "strafe"))


@dataclass(frozen=True)
class Rates:
    """What a held key does per frame. The defaults are exact in ViZDoom at frame skip 2:
    5.625° = 1024 engine angle units, 2.8125° = 512, so a turn and its reverse meet again."""

    turn: float = 5.625  # deg/frame (+left)
    look: float = 2.8125  # deg/frame (+up)
    forward: float = 12.0  # map units/frame
    strafe: float = 10.0  # map units/frame (+right)
    run: float = 2.0  # movement multiplier while Shift is held (clamped to the action range)
    mouse_turn: float = 0.25  # deg per mouse pixel (mouse look, when on)
    mouse_look: float = 0.15


# key -> (action index, direction). Left/right arrows strafe instead of turning while Alt is held.
HELD: dict[str, tuple[int, int]] = {
    "left": (TURN, +1), "a": (TURN, +1),
    "right": (TURN, -1), "d": (TURN, -1),
    "up": (FORWARD, +1), "w": (FORWARD, +1),
    "down": (FORWARD, -1), "s": (FORWARD, -1),
    "q": (STRAFE, -1), "e": (STRAFE, +1),
    "page up": (LOOK, +1), "page down": (LOOK, -1),
}
ALT = frozenset({"left alt", "right alt"})
SHIFT = frozenset({"left shift", "right shift"})
ALT_ARROWS: dict[str, tuple[int, int]] = {"left": (STRAFE, -1), "right": (STRAFE, +1)}

# key -> command, acted on when the key goes down.
COMMANDS: dict[str, str] = {
    "r": "reset",
    "p": "pause",
    "n": "step",
    "f1": "help",
    "f12": "screenshot",
    "v": "record",
    "m": "memory",
    "escape": "quit",
}

# Every key that does something: a script naming any other key has a typo in it.
KNOWN_KEYS = frozenset(HELD) | ALT | SHIFT | frozenset(COMMANDS)

HELP_LINES = (
    ("arrows / W A S D", "turn and move"),
    ("Q / E, Alt + arrows", "strafe left / right"),
    ("PgUp / PgDn", "look up / down"),
    ("Shift", "run"),
    ("mouse (with --mouse)", "turn and look"),
    ("R", "reset to the start frames"),
    ("P", "pause; N steps one block while paused"),
    ("F1", "this help"),
    ("F12", "screenshot (PNG)"),
    ("V", "start / stop recording (mp4)"),
    ("M", "memory view: decoded slots and their poses"),
    ("Esc", "quit"),
)


def action_row(pressed, rates: Rates = Rates(), mouse: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Held keys (+ mouse motion in pixels since the last frame) -> one frame's action
    `[ACTION_DIM]` float32, clamped to the action ranges. Opposite keys cancel."""
    pressed = set(pressed)
    alt = bool(pressed & ALT)
    direction = np.zeros(ACTION_DIM, dtype=np.float64)
    for key in pressed:
        binding = ALT_ARROWS.get(key) if alt else None
        binding = binding or HELD.get(key)
        if binding is not None:
            direction[binding[0]] += binding[1]
    direction = np.clip(direction, -1, 1)  # "left" and "a" together turn once, not twice
    speed = rates.run if pressed & SHIFT else 1.0
    scale = np.zeros(ACTION_DIM, dtype=np.float64)
    scale[TURN], scale[LOOK] = rates.turn, rates.look
    scale[FORWARD], scale[STRAFE] = rates.forward * speed, rates.strafe * speed
    row = direction * scale
    row[TURN] -= mouse[0] * rates.mouse_turn
    row[LOOK] -= mouse[1] * rates.mouse_look
    return np.clip(row, ACTION_LOW, ACTION_HIGH).astype(np.float32)


def commands(pressed, previous) -> list[str]:
    """Commands of the keys that went down between two key states, in a stable order."""
    down = set(pressed) - set(previous)
    return [cmd for key, cmd in COMMANDS.items() if key in down]
