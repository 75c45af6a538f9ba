"""The revisit benchmark: held-out cases where the camera leaves a view and comes back.

A case is one episode on a held-out map (never used for training), starting at a settled view:

    frames [0, M)        the *memorize* segment: given to the model as history; the camera moves
                         away from the remembered view R (frame `remembered`) — see KINDS
    frames [M, N)        the *return* segment: only actions[M:N] are given to the model; the
                         engine's frames are the ground truth it is scored against
    revisits             pairs [j, i], j >= M > i: return frame j is at the pose of memorize frame i
                         (position within POS_TOL units, angle and pitch within ANGLE_TOL degrees)
    away_frames          frames from R to the case's last frame, which is back at R's pose

Case kinds (`--kinds`):
    look-around          stand still at R = frame 0, pan away (up to a full turn), pan back
    out-and-back         walk away from R = frame 0 in straight legs, retrace the walk
    long-away            pan 120-240 degrees away from R = frame 0 and look around there, so that
                         the camera is away from R for at least LONG_AWAY_FRAMES frames
    look-first           the first frames (the `window` strategy's sinks) face elsewhere; a pan
                         reaches R, then a look-around from R: only memory of the session's
                         middle holds R
Turns are whole engine angle units and movement waits out Doom's momentum (DESIGN.md, "ViZDoom
facts"), so a return is exact; a case whose last frame is not back at R's pose is redrawn.

On disk a benchmark is a regular dataset (one episode per case, `magworld data check` applies)
plus `revisit.json`, which lists the cases; docs/dataset.md is the spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldmodel.actions import ACTION_DIM
from worldmodel.data.engine import TICRATE, DoomEngine, EngineSettings
from worldmodel.data.policies import WanderSegment, long_away_plan, look_around_plan, look_first_plan, out_and_back_plan
from worldmodel.data.shards import ShardWriter, _write_json_atomic, open_arrays, read_shard_index, write_dataset_meta
from worldmodel.data.splits import heldout_maps, parse_map, scene_id

POS_TOL = 1.0  # map units
ANGLE_TOL = 1.0  # degrees
KINDS = ("look-around", "out-and-back", "long-away", "look-first")
DEFAULT_KINDS = ("look-around", "out-and-back")  # the project's 64-case benchmark (docs/results.md)
LONG_AWAY_FRAMES = 100
PLANS = {
    "look-around": look_around_plan,
    "out-and-back": out_and_back_plan,
    "long-away": lambda rng, skip: long_away_plan(rng, skip, LONG_AWAY_FRAMES),
    "look-first": look_first_plan,
}


@dataclass
class RevisitCase:
    """One case. frames [N,H,W,3] uint8, actions [N,4] float32, poses [N,5] float32."""

    name: str
    map: str
    scene: int
    kind: str
    memorize_frames: int  # M
    revisits: list[tuple[int, int]]  # (return frame j, memorize frame i)
    frames: np.ndarray
    actions: np.ndarray
    poses: np.ndarray
    remembered: int = 0  # R: the memorize frame whose view the case returns to at its end

    @property
    def away_frames(self) -> int:
        return len(self.frames) - 1 - self.remembered

    @property
    def memorize(self) -> slice:
        return slice(0, self.memorize_frames)

    @property
    def ret(self) -> slice:
        return slice(self.memorize_frames, len(self.frames))


def _angle_diff(a, b):
    return np.abs((a - b + 180.0) % 360.0 - 180.0)


def find_revisits(poses: np.ndarray, m: int) -> list[tuple[int, int]]:
    """For every return frame j >= m, the closest memorize frame i < m within tolerance."""
    out = []
    mem = poses[:m].astype(np.float64)
    for j in range(m, len(poses)):
        p = poses[j].astype(np.float64)
        d = np.linalg.norm(mem[:, :3] - p[:3], axis=1)
        ok = (d < POS_TOL) & (_angle_diff(mem[:, 3], p[3]) < ANGLE_TOL) & (np.abs(mem[:, 4] - p[4]) < ANGLE_TOL)
        if ok.any():
            idx = np.flatnonzero(ok)
            score = d[idx] + _angle_diff(mem[idx, 3], p[3]) + np.abs(mem[idx, 4] - p[4])
            out.append((j, int(idx[np.argmin(score)])))
    return out


def last_seen(poses: np.ndarray, m: int, j: int) -> int | None:
    """The latest memorize frame i < m at return frame j's pose (within tolerance), or None.
    `j - last_seen` is how long ago the view was last seen; `find_revisits` pairs j with the
    closest pose instead, which may be an earlier visit."""
    mem = poses[:m].astype(np.float64)
    p = poses[j].astype(np.float64)
    ok = ((np.linalg.norm(mem[:, :3] - p[:3], axis=1) < POS_TOL) & (_angle_diff(mem[:, 3], p[3]) < ANGLE_TOL)
          & (np.abs(mem[:, 4] - p[4]) < ANGLE_TOL))
    return int(np.flatnonzero(ok)[-1]) if ok.any() else None


def record_case(engine: DoomEngine, rng, kind: str, prelude_frames: int):
    """Play one case on the engine's current map. Returns (frames, actions, poses, M, R) or None
    when the camera did not get back to R (a wall broke an out-and-back walk, the pitch clamped)."""
    skip = engine.s.frame_skip
    frame, pose = engine.reset()
    # Walk somewhere first, so that cases do not all start at the map's spawn point.
    prelude = WanderSegment(rng, skip, prelude_frames)
    while (a := prelude.next(pose)) is not None:
        frame, pose, done = engine.step(a)
        if done:
            return None
    if kind not in PLANS:
        raise ValueError(f"unknown revisit case kind {kind!r}; choose from {', '.join(KINDS)}")
    plan, marks = PLANS[kind](rng, skip)
    frames, actions, poses = [], [], []
    for t, a in enumerate(plan):
        frame, pose, done = engine.step(a)
        if done:
            return None
        if t >= marks["start"]:
            frames.append(frame)
            actions.append(a if t > marks["start"] else np.zeros(ACTION_DIM, np.float32))
            poses.append(pose)
    m = marks["away"] - marks["start"] + 1
    r = marks.get("remembered", 0)
    poses = np.stack(poses)
    if not find_revisits(poses[[r, -1]], 1):
        return None
    return np.stack(frames), np.stack(actions).astype(np.float32), poses, m, r


def build_revisit_bench(out, cases: int = 64, kinds=DEFAULT_KINDS, maps: list[str] | None = None, seed: int = 0,
                        width: int = 160, height: int = 120, frame_skip: int = 2, progress: bool = True,
                        max_tries: int = 12) -> list[dict]:
    """Record `cases` cases (kinds alternate) on `maps` (default: the held-out maps) into `out`."""
    from tqdm import tqdm

    maps = maps or heldout_maps()
    rng = np.random.default_rng(seed)
    meta = {"source": "vizdoom", "benchmark": "revisit", "maps": maps, "frame_skip": frame_skip,
            "fps": TICRATE / frame_skip, "width": width, "height": height, "policy": "revisit", "seed": seed,
            "kinds": list(kinds), "pos_tol": POS_TOL, "angle_tol": ANGLE_TOL, "monsters": False, "freelook": True,
            "render": {"hud": False, "weapon": False, "crosshair": False}}
    write_dataset_meta(out, meta)
    writer = ShardWriter(out, "cases-00000")
    engine = None
    listed = []
    for c in tqdm(range(cases), desc="revisit cases", disable=not progress):
        kind = kinds[c % len(kinds)]
        map_name = maps[c % len(maps)]
        wad, name = parse_map(map_name)
        if engine is None:
            engine = DoomEngine(EngineSettings(wad, name, width, height, frame_skip, seed=seed))
        else:
            engine.set_map(wad, name)
        # Walls break many out-and-back walks (see `record_case`); after `max_tries` the case
        # falls back to a look-around, which always returns exactly, and says so in its `kind`.
        got = None
        for attempt in range(2 * max_tries):
            if attempt == max_tries and kind == "out-and-back":
                kind = "look-around"
            case_seed = int(rng.integers(2**31))
            r = np.random.default_rng(case_seed)
            got = record_case(engine, r, kind, int(r.integers(0, 120)))
            if got is not None:
                break
        if got is None:
            raise RuntimeError(f"no case on {map_name} came back to its start in {2 * max_tries} tries")
        frames, actions, poses, m, r = got
        revisits = find_revisits(poses, m)
        writer.add_episode(frames, actions, poses, scene_id(map_name), map=map_name, split="heldout",
                           policy=kind, seed=case_seed)
        listed.append({"name": f"case-{c:04d}", "shard": writer.name, "episode": len(writer.episodes) - 1,
                       "map": map_name, "scene": scene_id(map_name), "kind": kind, "seed": case_seed,
                       "memorize_frames": m, "frames": len(frames), "remembered": r,
                       "away_frames": len(frames) - 1 - r, "sinks_hold_view": r == 0,
                       "revisits": [list(p) for p in revisits]})
    writer.close()
    if engine is not None:
        engine.close()
    _write_json_atomic(Path(out) / "revisit.json", {"version": 1, "cases": listed})
    return listed


def load_cases(root):
    """Yield `RevisitCase`s of a benchmark directory (arrays memory-mapped)."""
    root = Path(root)
    index = json.loads((root / "revisit.json").read_text())
    arrays, episodes = {}, {}
    for c in index["cases"]:
        shard = root / "shards" / c["shard"]
        if shard not in arrays:
            arrays[shard], episodes[shard] = open_arrays(shard), read_shard_index(shard)
        ep = episodes[shard][c["episode"]]
        sl = slice(ep.start, ep.start + ep.length)
        a = arrays[shard]
        yield RevisitCase(c["name"], c["map"], c["scene"], c["kind"], c["memorize_frames"],
                          [tuple(p) for p in c["revisits"]], a["frames"][sl], a["actions"][sl], a["poses"][sl],
                          c.get("remembered", 0))  # benchmarks made before `remembered`: frame 0
