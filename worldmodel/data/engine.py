"""ViZDoom set up for recording: headless, no monsters, freelook, exact camera units.

`DoomEngine.reset()` starts an episode and skips the spawn tics that ignore input;
`DoomEngine.step(action)` applies one frame's action (`[ACTION_DIM]` float32, see
`worldmodel/actions.py`) for `frame_skip` tics and returns the next frame `[H, W, 3]` uint8 and
pose `[POSE_DIM]` float32 (x, y, z, angle in [0, 360) +left, pitch +up).

Engine facts this module relies on (measured, ViZDoom 1.3.2):
- A positive TURN delta turns right and a positive LOOK delta looks up, while the engine's PITCH
  variable is negative looking up: both are flipped here to the project's +left / +up.
- The engine stores angles in 1/65536 of a circle and rounds + and - deltas differently, so turn
  and look are snapped to whole units per tic (`snap_action`); then a pan and its reverse return
  to the exact start angle.
- Movement deltas are Doom's `forwardmove`/`sidemove`: each tic adds `value/32` units/tic of
  thrust, then velocity decays by friction 0.90625 per tic, so a held value v drifts to v/3
  units/tic. An action's forward/strafe is that steady speed in units per frame. Fractional
  values are rounded asymmetrically by the engine, so they are snapped to whole values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from worldmodel.actions import ACTION_DIM, ACTION_HIGH, ACTION_LOW

TICRATE = 35
ANGLE_UNIT = 360.0 / 65536  # degrees per engine angle unit
FRICTION = 0.90625
THRUST_PER_VALUE = 1.0 / 32  # units/tic of thrust per unit of move delta
MAX_MOVE_VALUE = 50.0  # the engine clamps move deltas here
SPAWN_TICS = 10  # the first ~8 tics after new_episode() ignore input
PITCH_LIMIT = 30.0  # policies stay inside this; the engine clamps pitch near here


def wad_path(wad: str) -> str:
    """Path of a WAD: a file path, or a name of one shipped beside vizdoom (freedoom1/2.wad)."""
    if os.path.isfile(wad):
        return wad
    import vizdoom

    p = os.path.join(os.path.dirname(vizdoom.__file__), wad)
    if not os.path.isfile(p):
        raise ValueError(f"WAD {wad!r} not found (neither a file nor shipped with vizdoom)")
    return p


def parse_resolution(text: str) -> tuple[int, int]:
    """`"160x120"` -> (160, 120), checked against the resolutions ViZDoom renders."""
    import vizdoom as vzd

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"resolution {text!r} is not of the form WxH, e.g. 160x120") from None
    if not hasattr(vzd.ScreenResolution, f"RES_{w}X{h}"):
        names = [n[4:].lower() for n in dir(vzd.ScreenResolution) if n.startswith("RES_")]
        raise ValueError(f"ViZDoom cannot render {w}x{h}; choose one of {', '.join(sorted(names, key=len))}")
    return w, h


def snap_action(action: np.ndarray, frame_skip: int) -> np.ndarray:
    """The action the engine will actually perform: turn/look in whole angle units per tic,
    movement in whole move-delta values (the engine rounds fractional values differently for + and
    -, which breaks retraced paths), clamped to the engine's limit. `[..., ACTION_DIM]` float32 -> same shape."""
    a = np.clip(np.asarray(action, dtype=np.float64), ACTION_LOW, ACTION_HIGH)
    a = a.copy()
    a[..., :2] = np.round(a[..., :2] / (ANGLE_UNIT * frame_skip)) * (ANGLE_UNIT * frame_skip)
    values = np.clip(np.round(a[..., 2:] * 3.0 / frame_skip), -MAX_MOVE_VALUE, MAX_MOVE_VALUE)
    a[..., 2:] = values * frame_skip / 3.0
    return a.astype(np.float32)


def move_value(speed_per_frame: float, frame_skip: int) -> float:
    """Move delta whose steady speed is `speed_per_frame` units/frame (steady = value/3 per tic)."""
    return float(speed_per_frame) * 3.0 / frame_skip


@dataclass
class EngineSettings:
    wad: str = "freedoom2.wad"
    map: str = "MAP01"
    width: int = 160
    height: int = 120
    frame_skip: int = 2
    hud: bool = False
    weapon: bool = False
    crosshair: bool = False
    seed: int = 0

    @property
    def fps(self) -> float:
        return TICRATE / self.frame_skip


class DoomEngine:
    """One headless ViZDoom game. Not thread-safe; one per process."""

    def __init__(self, settings: EngineSettings):
        import vizdoom as vzd

        self.s = settings
        g = vzd.DoomGame()
        g.set_doom_game_path(wad_path(settings.wad))
        g.set_doom_map(settings.map)
        g.set_screen_resolution(getattr(vzd.ScreenResolution, f"RES_{settings.width}X{settings.height}"))
        g.set_screen_format(vzd.ScreenFormat.RGB24)
        g.set_render_hud(settings.hud)
        g.set_render_weapon(settings.weapon)
        g.set_render_crosshair(settings.crosshair)
        g.set_render_decals(False)
        g.set_render_particles(False)
        g.set_render_messages(False)
        g.set_window_visible(False)
        g.set_sound_enabled(False)
        B, V = vzd.Button, vzd.GameVariable
        g.set_available_buttons(
            [B.TURN_LEFT_RIGHT_DELTA, B.LOOK_UP_DOWN_DELTA, B.MOVE_FORWARD_BACKWARD_DELTA, B.MOVE_LEFT_RIGHT_DELTA]
        )
        g.set_available_game_variables(
            [V.POSITION_X, V.POSITION_Y, V.POSITION_Z, V.ANGLE, V.PITCH, V.VELOCITY_X, V.VELOCITY_Y]
        )
        # Cheats are on only to grant god mode: damaging floors would otherwise kill the player
        # and tint frames red, which no action explains.
        g.add_game_args("-nomonsters +freelook 1 +sv_cheats 1")
        g.set_episode_timeout(0)
        g.set_mode(vzd.Mode.PLAYER)
        g.set_seed(settings.seed)
        # ViZDoom creates ./_vizdoom/ on init with a check-then-mkdir; two workers starting together
        # race on it and the loser segfaults ("Failed to create ./_vizdoom/ directory: File exists").
        os.makedirs("_vizdoom", exist_ok=True)
        g.init()
        self.game = g
        self.velocity = np.zeros(2, dtype=np.float64)

    def set_map(self, wad: str, map_name: str) -> None:
        if wad != self.s.wad:
            self.close()
            self.__init__(EngineSettings(**{**self.s.__dict__, "wad": wad, "map": map_name}))
        else:
            self.s.map = map_name
            self.game.set_doom_map(map_name)

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        """New episode on the current map; returns (frame [H,W,3] uint8, pose [5] float32)."""
        self.game.new_episode()
        self.game.send_game_command("god")
        self.game.make_action([0.0] * ACTION_DIM, SPAWN_TICS)
        return self._observe()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Apply one snapped action for `frame_skip` tics -> (frame, pose, done)."""
        a = np.asarray(action, dtype=np.float64)
        k = self.s.frame_skip
        cmd = [-a[0] / k, a[1] / k, move_value(a[2], k), move_value(a[3], k)]
        self.game.make_action(cmd, k)
        if self.game.is_episode_finished():
            return None, None, True
        frame, pose = self._observe()
        return frame, pose, False

    def _observe(self) -> tuple[np.ndarray, np.ndarray]:
        st = self.game.get_state()
        v = st.game_variables
        pose = np.array([v[0], v[1], v[2], v[3] % 360.0, -v[4]], dtype=np.float32)
        self.velocity = np.array([v[5], v[6]], dtype=np.float64)
        return st.screen_buffer, pose

    def close(self) -> None:
        self.game.close()


def predict_position(xy: np.ndarray, velocity: np.ndarray, angle_deg: float, action: np.ndarray, frame_skip: int):
    """Doom's free-space motion for one frame: per tic, velocity += thrust; position += velocity;
    velocity *= friction. Returns (xy, velocity) after the frame; walls are not modelled."""
    th = np.deg2rad(angle_deg)
    fwd = np.array([np.cos(th), np.sin(th)])
    right = np.array([np.sin(th), -np.cos(th)])
    thrust = (move_value(action[2], frame_skip) * fwd + move_value(action[3], frame_skip) * right) * THRUST_PER_VALUE
    xy = np.array(xy, dtype=np.float64)
    v = np.array(velocity, dtype=np.float64)
    for _ in range(frame_skip):
        v = v + thrust
        xy = xy + v
        v = v * FRICTION
    return xy, v
