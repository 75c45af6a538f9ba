"""The recorder: several worker processes drive ViZDoom with a policy and write shards.

Each worker owns one engine and an RNG seeded by (seed, worker index), records episodes of at
most `episode_frames` frames on maps drawn from `maps`, and closes a shard every `shard_frames`
frames. With the same settings (including `workers`) a recording is reproduced exactly.

Every frame's pose is checked against its action (`PoseCheck`): turn and look must change the
angle and pitch exactly, and movement must match Doom's free-space momentum model unless a wall
got in the way. The fractions are written into each episode's metadata.

Workers and their engines die with the recorder, even a SIGKILLed one (`parent_watch`), so an
interrupted recording stops writing at once; `frames_requested` in dataset.json lets
`magworld data check` call what is left incomplete.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

from worldmodel.actions import ACTION_DIM
from worldmodel.data.engine import TICRATE, DoomEngine, EngineSettings, predict_position
from worldmodel.data.parent_watch import die_with_parent
from worldmodel.data.policies import Policy
from worldmodel.data.shards import ShardWriter, write_dataset_meta
from worldmodel.data.splits import parse_map, scene_id, split_of, train_maps


@dataclass
class RecordConfig:
    out: str
    policy: str = "mix"
    frames: int = 10000
    maps: list[str] = field(default_factory=train_maps)  # "<wad>:<map>" names
    workers: int = 2
    width: int = 160
    height: int = 120
    frame_skip: int = 2
    seed: int = 0
    episode_frames: int = 600
    shard_frames: int = 1200
    weights: dict | None = None  # mix weights
    hud: bool = False
    weapon: bool = False
    crosshair: bool = False


class PoseCheck:
    """Counts frames whose pose change agrees with their action."""

    def __init__(self, frame_skip: int):
        self.skip = frame_skip
        self.frames = self.turn_ok = self.look_ok = self.move_ok = 0

    def update(self, prev_pose, prev_velocity, action, pose) -> None:
        self.frames += 1
        dturn = (pose[3] - prev_pose[3] - action[0] + 180.0) % 360.0 - 180.0
        self.turn_ok += abs(dturn) < 1e-3
        self.look_ok += abs(pose[4] - prev_pose[4] - action[1]) < 1e-3
        xy, _ = predict_position(prev_pose[:2], prev_velocity, float(pose[3]), action, self.skip)
        self.move_ok += np.linalg.norm(xy - pose[:2]) < 0.5

    def summary(self) -> dict:
        n = max(self.frames, 1)
        return {"turn_exact": self.turn_ok / n, "look_exact": self.look_ok / n, "move_free_space": self.move_ok / n}


def record_episode(engine: DoomEngine, policy: Policy, rng, max_frames: int):
    """One episode: frames [n,H,W,3] uint8, actions [n,4] float32 (actions[0] = 0), poses [n,5]
    float32, segment log [(kind, first_frame, marks)], PoseCheck. Ends early at a map exit."""
    frame, pose = engine.reset()
    frames, actions, poses = [frame], [np.zeros(ACTION_DIM, np.float32)], [pose]
    check = PoseCheck(engine.s.frame_skip)
    segments = []
    seg = None
    while len(frames) < max_frames:
        a = seg.next(pose) if seg is not None else None
        if a is None:
            seg = policy.segment(rng)
            segments.append((seg.kind, len(frames), dict(seg.marks)))
            continue
        velocity = engine.velocity
        frame, new_pose, done = engine.step(a)
        if done:
            break
        check.update(pose, velocity, a, new_pose)
        pose = new_pose
        frames.append(frame)
        actions.append(a)
        poses.append(pose)
    return np.stack(frames), np.stack(actions).astype(np.float32), np.stack(poses), segments, check


def _worker(cfg: RecordConfig, worker: int, quota: int, queue, parent_pid: int) -> None:
    die_with_parent(parent_pid)  # before the engine starts, so that it joins the worker's group
    try:
        rng = np.random.default_rng([cfg.seed, worker])
        maps = [parse_map(m) for m in cfg.maps]
        wad, name = maps[int(rng.integers(len(maps)))]
        engine = DoomEngine(EngineSettings(wad, name, cfg.width, cfg.height, cfg.frame_skip, cfg.hud,
                                           cfg.weapon, cfg.crosshair, seed=cfg.seed * 1000 + worker))
        policy = Policy(cfg.policy, cfg.frame_skip, cfg.weights)
        written = shard_index = 0
        writer = ShardWriter(cfg.out, f"w{worker:02d}-{shard_index:05d}")
        first = True
        while written < quota:
            if not first:
                wad, name = maps[int(rng.integers(len(maps)))]
                engine.set_map(wad, name)
            first = False
            ep_seed = int(rng.integers(2**31))
            frames, actions, poses, segments, check = record_episode(
                engine, policy, np.random.default_rng(ep_seed), min(cfg.episode_frames, quota - written))
            if len(frames) < 2:
                continue
            map_name = f"{wad}:{name}"
            writer.add_episode(frames, actions, poses, scene_id(map_name), map=map_name, split=split_of(map_name),
                               policy=cfg.policy, seed=ep_seed, segments=[list(s) for s in segments],
                               pose_check=check.summary())
            written += len(frames)
            queue.put(("frames", len(frames), check.summary()))
            if writer.n >= cfg.shard_frames:
                writer.close()
                shard_index += 1
                writer = ShardWriter(cfg.out, f"w{worker:02d}-{shard_index:05d}")
        writer.close()
        engine.close()
        queue.put(("done", worker, None))
    except Exception:
        queue.put(("error", worker, traceback.format_exc()))


def dataset_meta(cfg: RecordConfig) -> dict:
    return {
        "source": "vizdoom", "wads": sorted({parse_map(m)[0] for m in cfg.maps}), "maps": list(cfg.maps),
        "frame_skip": cfg.frame_skip, "fps": TICRATE / cfg.frame_skip, "width": cfg.width, "height": cfg.height,
        "policy": cfg.policy, "mix_weights": cfg.weights, "seed": cfg.seed, "workers": cfg.workers,
        "frames_requested": cfg.frames, "episode_frames": cfg.episode_frames, "shard_frames": cfg.shard_frames,
        "render": {"hud": cfg.hud, "weapon": cfg.weapon, "crosshair": cfg.crosshair}, "monsters": False,
        "freelook": True, "vizdoom_version": _vizdoom_version(),
    }


def _vizdoom_version() -> str:
    import vizdoom

    return vizdoom.__version__


def record(cfg: RecordConfig, progress: bool = True) -> dict:
    """Record `cfg.frames` frames into `cfg.out` with `cfg.workers` processes.
    Returns {"frames", "seconds", "fps", "pose_check"}; raises RuntimeError if a worker fails."""
    from tqdm import tqdm

    for m in cfg.maps:
        parse_map(m)
    write_dataset_meta(cfg.out, dataset_meta(cfg))
    quotas = [cfg.frames // cfg.workers + (w < cfg.frames % cfg.workers) for w in range(cfg.workers)]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_worker, args=(cfg, w, q, queue, os.getpid()), daemon=True)
             for w, q in enumerate(quotas) if q > 0]
    for p in procs:
        p.start()
    total, checks, done = 0, [], 0
    bar = tqdm(total=cfg.frames, unit="frame", desc="record", disable=not progress)
    try:
        while done < len(procs):
            try:
                kind, a, b = queue.get(timeout=1.0)
            except queue_module.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a recorder worker exited with status {dead[0].exitcode}") from None
                continue
            if kind == "frames":
                total += a
                checks.append((a, b))
                bar.update(a)
            elif kind == "done":
                done += 1
            else:
                raise RuntimeError(f"recorder worker {a} failed:\n{b}")
    finally:
        bar.close()
        for p in procs:
            if p.is_alive() and done < len(procs):
                p.terminate()
            p.join()
    seconds = time.perf_counter() - t0
    weight = max(sum(n for n, _ in checks), 1)
    summary = {k: float(sum(n * c[k] for n, c in checks) / weight) for k in ("turn_exact", "look_exact", "move_free_space")}
    return {"frames": total, "seconds": seconds, "fps": total / seconds, "pose_check": summary, "config": asdict(cfg)}
