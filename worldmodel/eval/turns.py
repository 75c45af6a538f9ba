"""The turn test: from one real context, does the model turn left, turn right and stand still?

A case is made by the engine alone (no dataset): on a held-out map the player wanders for a
random while, stops (Doom's momentum dies down), and the last `context_blocks` blocks are the
context. From that same state the engine then plays three branches of `turn_frames` frames —
turn left, turn right, stand still — by replaying the case from a new episode (the engine is
deterministic without monsters). The model observes the context and generates each branch from
its actions with the same noise, so the branches differ only by what the actions do.

Scored per predictor, over cases:
  psnr vs engine     per branch, per frame (and two yardsticks on the same frames: copy-last, the
                     last context frame; turn-last, that frame turned by the engine's yaw, which
                     gets the geometry right and invents nothing: worldmodel/eval/reprojection.py)
  delta_db           PSNR(model's left vs engine left) − PSNR(model's right vs engine left), and
                     the same for right: true − mirrored turns, > 0 when the model follows the keys
  left_vs_right_psnr PSNR between the model's left and right generations: >= 50 dB means the
                     turn changes nothing
  sharpness          Laplacian variance of the generated frames over the engine's (ratio)
  implied turn       the yaw that best explains each of the first IMPLIED_FRAMES frames as the last
                     context frame turned (reprojection.implied_yaw), beside the engine's own:
                     does the model slide the view by the right angle, however blurred
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from worldmodel.actions import ACTION_DIM
from worldmodel.bundle import WorldModel
from worldmodel.data.engine import DoomEngine, snap_action
from worldmodel.data.policies import STOP_FRAMES, WanderSegment
from worldmodel.data.splits import heldout_maps, parse_map
from worldmodel.eval.counterfactual import IGNORES_ACTIONS_DB, TURN_COMPONENTS, frame_psnr
from worldmodel.eval.engine_view import at_model_size, engine_settings
from worldmodel.eval.prediction import continue_from
from worldmodel.eval.reprojection import followed_share, implied_yaw, turned_last_frame, yaw_change
from worldmodel.metrics import sharpness
from worldmodel.rollout import Rollout

BRANCHES = ("left", "right", "still")
TURN_SIGN = {"left": 1.0, "right": -1.0, "still": 0.0}  # + turns left (worldmodel/actions.py)
MIRROR = {"left": "right", "right": "left"}
IMPLIED_FRAMES = 3  # frames of each turn whose implied yaw is measured (a third of the view or more is shared)
MAX_PRELUDE_FRAMES = 120  # the wander before a case, so that cases do not all start at the spawn point


@dataclass
class TurnCase:
    """One context and the engine's three continuations of it.

    context [C, H, W, 3] uint8, context_actions [C, A] and context_poses [C, 5] float32;
    actions / frames / poses: branch -> [T, A] float32 / [T, H, W, 3] uint8 / [T, 5] float32.
    """

    map: str
    seed: int
    context: np.ndarray
    context_actions: np.ndarray
    context_poses: np.ndarray
    actions: dict[str, np.ndarray] = field(default_factory=dict)
    frames: dict[str, np.ndarray] = field(default_factory=dict)
    poses: dict[str, np.ndarray] = field(default_factory=dict)


def branch_actions(branch: str, frames: int, turn_deg: float, frame_skip: int) -> np.ndarray:
    """[frames, A]: a turn of `turn_deg` per frame to the branch's side (zero for `still`)."""
    a = np.zeros((frames, ACTION_DIM), np.float32)
    a[:, list(TURN_COMPONENTS)] = TURN_SIGN[branch] * turn_deg
    return snap_action(a, frame_skip)


def make_turn_cases(cases: int, block_frames: int, context_blocks: int, turn_frames: int, turn_deg: float,
                    height: int, width: int, maps: list[str] | None = None, frame_skip: int = 2,
                    seed: int = 0) -> list[TurnCase]:
    """`cases` cases, maps taken in turn from `maps` (default: the held-out maps), frames at the
    model's size (height, width)."""
    if turn_frames % block_frames or turn_frames <= 0:
        raise ValueError(f"the turn must be a whole number of blocks of {block_frames} frames, got {turn_frames}")
    maps = maps or heldout_maps()
    c = context_blocks * block_frames
    settle = max(STOP_FRAMES, c)  # the player has stopped sliding before the turn starts
    rng = np.random.default_rng(seed)
    engine, out = None, []
    for k in range(cases):
        map_name = maps[k % len(maps)]
        wad, name = parse_map(map_name)
        if engine is None:
            engine = DoomEngine(engine_settings(wad, name, height, width, frame_skip, seed))
        else:
            engine.set_map(wad, name)
        case_seed = int(rng.integers(2**31))
        r = np.random.default_rng(case_seed)
        # The wander steers by the pose it sees; record what it did, then replay that open-loop.
        _, pose = engine.reset()
        wander = WanderSegment(r, frame_skip, int(r.integers(0, MAX_PRELUDE_FRAMES)))
        plan = []
        while (a := wander.next(pose)) is not None:
            _, pose, done = engine.step(a)
            if done:
                raise RuntimeError(f"the episode on {map_name} ended during the wander")
            plan.append(a)
        plan = np.concatenate([np.asarray(plan, np.float32).reshape(-1, ACTION_DIM),
                               np.zeros((settle, ACTION_DIM), np.float32)])
        case = None
        for branch in BRANCHES:
            turn = branch_actions(branch, turn_frames, turn_deg, frame_skip)
            frames, poses = _play(engine, np.concatenate([plan, turn]), map_name)
            frames = at_model_size(frames, height, width)
            ctx = slice(len(plan) - c, len(plan))
            if case is None:
                case = TurnCase(map_name, case_seed, frames[ctx], plan[ctx], poses[ctx])
            elif not np.array_equal(poses[ctx], case.context_poses):
                raise RuntimeError(f"replaying case {k} on {map_name} did not reach the same view: the engine "
                                   "is not deterministic here")
            case.actions[branch] = turn
            case.frames[branch] = frames[len(plan):]
            case.poses[branch] = poses[len(plan):]
        out.append(case)
    if engine is not None:
        engine.close()
    return out


def _play(engine: DoomEngine, actions: np.ndarray, map_name: str) -> tuple[np.ndarray, np.ndarray]:
    """A new episode, then one frame per action row: frames [N, h, w, 3], poses [N, 5]."""
    engine.reset()
    frames, poses = [], []
    for a in actions:
        frame, pose, done = engine.step(a)
        if done:
            raise RuntimeError(f"the episode on {map_name} ended during a turn case")
        frames.append(frame)
        poses.append(pose)
    return np.stack(frames), np.stack(poses).astype(np.float32)


def _sharpness(frames: np.ndarray) -> float:
    return float(sharpness(torch.as_tensor(frames).movedim(-1, -3)).mean())


@torch.no_grad()
def turn_eval(model: WorldModel, predictors: dict[str, Rollout], cases: list[TurnCase], seed: int = 0) -> dict:
    """Generate every branch of every case with every predictor. Returns
    {"summary": {row: ...}, "per_case": [...], "generated": [{predictor: {branch: frames}}]}."""
    per_case, generated = [], []
    for i, case in enumerate(cases):
        latents = model.encode(torch.from_numpy(case.context[None]))
        ctx_actions = torch.from_numpy(case.context_actions)
        ctx_poses = torch.from_numpy(case.context_poses)
        last = case.context[-1:]
        turned = {b: turned_last_frame(case.context[-1], case.poses[b], case.context_poses[-1]) for b in BRANCHES}
        row = {"map": case.map, "seed": case.seed, "predictors": {},
               "copy-last": {b: frame_psnr(np.repeat(last, len(case.frames[b]), 0), case.frames[b]).tolist()
                             for b in BRANCHES},
               "turn-last": {b: frame_psnr(turned[b], case.frames[b]).tolist() for b in BRANCHES},
               "turn-last_mirrored": {b: frame_psnr(turned[MIRROR[b]], case.frames[b]).tolist() for b in MIRROR},
               "engine_yaw": {b: yaw_change(case.poses[b][:IMPLIED_FRAMES], case.context_poses[-1]).tolist()
                              for b in BRANCHES},
               "engine_sharpness": float(np.mean([_sharpness(case.frames[b]) for b in BRANCHES]))}
        gens = {}
        for name, roll in predictors.items():
            gen = {b: continue_from(model, roll, latents, ctx_actions, torch.from_numpy(case.actions[b]), ctx_poses,
                                    torch.from_numpy(case.poses[b]), seed=seed * 100003 + i).cpu().numpy()
                   for b in BRANCHES}
            gens[name] = gen
            vs_engine = {b: frame_psnr(gen[b], case.frames[b]) for b in BRANCHES}
            mirrored = {b: frame_psnr(gen[MIRROR[b]], case.frames[b]) for b in MIRROR}
            row["predictors"][name] = {
                "psnr_vs_engine": {b: v.tolist() for b, v in vs_engine.items()},
                "psnr_mirrored_vs_engine": {b: v.tolist() for b, v in mirrored.items()},
                "delta_db": {b: float(vs_engine[b].mean() - mirrored[b].mean()) for b in MIRROR},
                "left_vs_right_psnr": frame_psnr(gen["left"], gen["right"]).tolist(),
                "sharpness": float(np.mean([_sharpness(gen[b]) for b in BRANCHES])),
                "implied_yaw": {b: [implied_yaw(case.context[-1], f) for f in gen[b][:IMPLIED_FRAMES]] for b in BRANCHES},
            }
        per_case.append(row)
        generated.append(gens)
    return {"summary": _summary(per_case, list(predictors)), "per_case": per_case, "generated": generated}


def _summary(per_case: list[dict], names: list[str]) -> dict:
    mean = lambda xs: float(np.mean(np.concatenate([np.ravel(x) for x in xs])))  # noqa: E731
    engine_sharp = float(np.mean([r["engine_sharpness"] for r in per_case]))
    out = {}
    for name in names:
        rows = [r["predictors"][name] for r in per_case]
        deltas = [d for r in rows for d in r["delta_db"].values()]
        between = mean([r["left_vs_right_psnr"] for r in rows])
        sharp = float(np.mean([r["sharpness"] for r in rows]))
        out[name] = {
            "psnr_vs_engine": {b: mean([r["psnr_vs_engine"][b] for r in rows]) for b in BRANCHES},
            "psnr_turns_vs_engine": mean([r["psnr_vs_engine"][b] for r in rows for b in MIRROR]),
            "psnr_mirrored_vs_engine": mean([r["psnr_mirrored_vs_engine"][b] for r in rows for b in MIRROR]),
            "delta_db": float(np.mean(deltas)), "true_better_fraction": float(np.mean(np.array(deltas) > 0)),
            "left_vs_right_psnr": between, "ignores_actions": bool(between >= IGNORES_ACTIONS_DB),
            "sharpness": sharp, "sharpness_ratio_to_engine": sharp / engine_sharp if engine_sharp > 0 else None,
            **_implied(rows, per_case),
        }
    out["copy-last"] = {"psnr_vs_engine": {b: mean([r["copy-last"][b] for r in per_case]) for b in BRANCHES},
                        "psnr_turns_vs_engine": mean([r["copy-last"][b] for r in per_case for b in MIRROR])}
    deltas = [np.mean(r["turn-last"][b]) - np.mean(r["turn-last_mirrored"][b]) for r in per_case for b in MIRROR]
    out["turn-last"] = {"psnr_vs_engine": {b: mean([r["turn-last"][b] for r in per_case]) for b in BRANCHES},
                        "psnr_turns_vs_engine": mean([r["turn-last"][b] for r in per_case for b in MIRROR]),
                        "psnr_mirrored_vs_engine": mean([r["turn-last_mirrored"][b] for r in per_case for b in MIRROR]),
                        "delta_db": float(np.mean(deltas)), "true_better_fraction": float(np.mean(np.array(deltas) > 0))}
    out["engine"] = {"sharpness": engine_sharp}
    return out


def _implied(rows: list[dict], per_case: list[dict]) -> dict:
    """Mean implied yaw per frame of each branch, the engine's beside it, and the share of the
    engine's turn that the model's frames show over every case (reprojection.followed_share)."""
    implied = {b: np.mean([r["implied_yaw"][b] for r in rows], 0).tolist() for b in BRANCHES}
    engine = {b: np.mean([c["engine_yaw"][b] for c in per_case], 0).tolist() for b in BRANCHES}
    turns_implied = [y for r in rows for b in MIRROR for y in r["implied_yaw"][b]]
    turns_engine = [y for c in per_case for b in MIRROR for y in c["engine_yaw"][b]]
    return {"implied_yaw": implied, "engine_yaw": engine, "turn_followed": followed_share(turns_implied, turns_engine)}


def save_strip(cases: list[TurnCase], generated: list[dict], path, strip_cases: int = 1) -> None:
    """A PNG per the first `strip_cases` cases, stacked: rows engine left / turn-last left / <each
    predictor> left / engine right / turn-last right / <each predictor> right / <each predictor> still; columns: the last context
    frame, then the branch's frames. Row names are written in a margin on the left."""
    from PIL import Image, ImageDraw

    blocks = []
    for case, gens in list(zip(cases, generated))[:strip_cases]:
        turned = {b: turned_last_frame(case.context[-1], case.poses[b], case.context_poses[-1]) for b in MIRROR}
        rows = [("engine left", case.frames["left"]), ("turn-last left", turned["left"])]
        rows += [(f"{n} left", g["left"]) for n, g in gens.items()]
        rows += [("engine right", case.frames["right"]), ("turn-last right", turned["right"])]
        rows += [(f"{n} right", g["right"]) for n, g in gens.items()]
        rows += [(f"{n} still", g["still"]) for n, g in gens.items()]
        blocks.append((case.map, [(label, np.concatenate([case.context[-1:], f], 0)) for label, f in rows]))
    h, w = cases[0].context.shape[1:3]
    margin, gap, title = 150, 4, 12
    cols = 1 + len(cases[0].frames["left"])
    height = sum(title + len(rows) * (h + gap) for _, rows in blocks)
    canvas = Image.new("RGB", (margin + cols * (w + gap), height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for map_name, rows in blocks:
        draw.text((2, y), f"{map_name}: context | turn frames ->", fill=(0, 0, 0))
        y += title
        for label, frames in rows:
            draw.text((2, y + h // 2 - 5), label, fill=(0, 0, 0))
            for j, f in enumerate(frames):
                canvas.paste(Image.fromarray(np.ascontiguousarray(f)), (margin + j * (w + gap), y))
            y += h + gap
    canvas.save(path)
