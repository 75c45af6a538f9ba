"""The key mapping: held keys become per-frame actions at the documented rates."""

import numpy as np
import pytest

from game.keymap import COMMANDS, HELD, Rates, action_row, commands
from worldmodel.actions import ACTION_HIGH, ACTION_LOW

R = Rates()


@pytest.mark.parametrize("keys, expected", [
    ({"left"}, [R.turn, 0, 0, 0]),
    ({"a"}, [R.turn, 0, 0, 0]),
    ({"right"}, [-R.turn, 0, 0, 0]),
    ({"d"}, [-R.turn, 0, 0, 0]),
    ({"up"}, [0, 0, R.forward, 0]),
    ({"w"}, [0, 0, R.forward, 0]),
    ({"s"}, [0, 0, -R.forward, 0]),
    ({"q"}, [0, 0, 0, -R.strafe]),
    ({"e"}, [0, 0, 0, R.strafe]),
    ({"page up"}, [0, R.look, 0, 0]),
    ({"page down"}, [0, -R.look, 0, 0]),
    ({"left alt", "left"}, [0, 0, 0, -R.strafe]),  # Alt + arrows strafe instead of turning
    ({"right alt", "right"}, [0, 0, 0, R.strafe]),
    ({"w", "left"}, [R.turn, 0, R.forward, 0]),
    ({"w", "s"}, [0, 0, 0, 0]),  # opposite keys cancel
    ({"left", "a"}, [R.turn, 0, 0, 0]),  # two keys for one direction do not add up
    (set(), [0, 0, 0, 0]),
    ({"x", "space"}, [0, 0, 0, 0]),  # unmapped keys do nothing
])
def test_held_keys_give_the_documented_action(keys, expected):
    row = action_row(keys)
    assert row.dtype == np.float32 and row.shape == (4,)
    np.testing.assert_allclose(row, expected)


def test_shift_runs_but_stays_in_range():
    row = action_row({"left shift", "w", "e"}, Rates(forward=20, strafe=20, run=2.0))
    np.testing.assert_allclose(row, [0, 0, ACTION_HIGH[2], ACTION_HIGH[3]])


def test_every_key_combination_stays_inside_the_action_ranges():
    fast = Rates(turn=40, look=40, forward=40, strafe=40)
    for keys in [set(HELD), {"left", "page up", "w", "e", "left shift"}, {"right", "page down", "s", "q"}]:
        row = action_row(keys, fast, mouse=(-500, 500))
        assert np.all(row >= ACTION_LOW) and np.all(row <= ACTION_HIGH)


def test_default_turn_and_look_are_exact_engine_angles():
    # 360/65536 degrees per engine unit, at frame skip 2: a pan and its reverse meet again.
    unit = 360 / 65536 * 2
    assert (R.turn / unit).is_integer() and (R.look / unit).is_integer()


def test_mouse_moves_turn_right_and_look_down():
    row = action_row(set(), R, mouse=(10, 4))
    assert row[0] == pytest.approx(-10 * R.mouse_turn) and row[1] == pytest.approx(-4 * R.mouse_look)


def test_commands_fire_once_when_the_key_goes_down():
    assert commands({"p"}, set()) == ["pause"]
    assert commands({"p"}, {"p"}) == []  # held: nothing more
    assert commands({"r", "escape", "w"}, {"w"}) == ["reset", "quit"]
    assert set(COMMANDS.values()) == {"reset", "pause", "step", "help", "screenshot", "record", "memory", "quit"}
