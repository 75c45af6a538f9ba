"""Next-block prediction given true history and actions, and memory-slot reconstruction.

PSNR is capped at 60 dB per frame before averaging. Each predictor is also run with counterfactual
actions (worldmodel/eval/counterfactual.py), and every row reports the sharpness (Laplacian
variance) of its frames beside that of the true frames, since PSNR rewards blur. Every figure is
reported beside two references measured on the same frames:
  copy-last  the trivial baseline: repeat the last observed true frame
  ae-ceiling what the autoencoder alone gives (decode(encode(truth))) — no predictor can beat it
and each row's PSNR is also split by what the camera did (`psnr_by_motion`: still / turning /
moving, from the engine's poses; worldmodel/eval/motion.py), since copy-last is near-exact where
the camera stood still and the overall mean mixes the two.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from worldmodel.bundle import WorldModel
from worldmodel.eval.counterfactual import COUNTERFACTUALS, ActionFollowing, counterfactual_actions, differs
from worldmodel.eval.motion import MOTION_KINDS, motion_kinds
from worldmodel.metrics import psnr, sharpness, ssim
from worldmodel.rollout import Rollout, decode_slot_latents


def _chw(frames: torch.Tensor) -> torch.Tensor:
    """[..., H, W, 3] uint8 -> [..., 3, H, W]."""
    return frames.movedim(-1, -3)


def _score(pred: torch.Tensor, truth: torch.Tensor) -> tuple[list[float], list[float]]:
    """uint8 [F, H, W, 3] each -> per-frame PSNR, SSIM."""
    a, b = _chw(pred.cpu()), _chw(truth.cpu())
    return psnr(a, b).tolist(), ssim(a, b).tolist()


PSNR_CAP = 60.0  # dB; identical frames (a player standing still) would otherwise average to infinity


def _summary(values: list[float]) -> dict:
    v = np.minimum(np.asarray(values, dtype=np.float64), PSNR_CAP)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "n": int(len(v))}


@torch.no_grad()
def continue_from(model: WorldModel, roll: Rollout, context: torch.Tensor, context_actions: torch.Tensor,
                  actions: torch.Tensor, context_poses: torch.Tensor | None = None,
                  poses: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """Reset `roll`, observe the true context, generate len(actions) frames from `actions`.

    context: latents [1, C, ch, h, w] (C a whole number of blocks); context_actions [C, A];
    actions [T, A] (T a whole number of blocks); poses [C or T, pose_dim] or None.
    The noise comes from `seed` alone, so two calls that differ only in `actions` differ only by
    what the actions do. Returns decoded frames uint8 [T, H, W, 3] (on the model's device).
    """
    bf = model.config.model.block_frames
    dev = model.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    # Held-out maps have no trained scene prompt: predict with the empty condition.
    scene = torch.full((1,), -1, dtype=torch.long, device=dev)
    pick = lambda p, j: None if p is None else p[None, j:j + bf]  # noqa: E731
    roll.reset()
    for j in range(0, context.shape[1], bf):
        roll.observe(context[:, j:j + bf], context_actions[None, j:j + bf], pick(context_poses, j))
    out = [roll.generate(actions[None, j:j + bf], scene, pick(poses, j), generator=gen)
           for j in range(0, len(actions), bf)]
    return model.decode(torch.cat(out, 1))[0]


def _by_motion(values: list[float], kinds: list[str]) -> dict:
    """PSNR summaries per motion kind (worldmodel/eval/motion.py) of frames that have it."""
    return {kind: _summary([v for v, k in zip(values, kinds) if k == kind]) for kind in MOTION_KINDS if kind in kinds}


def _sharp(frames: torch.Tensor) -> list[float]:
    """uint8 [F, H, W, 3] -> Laplacian variance per frame."""
    return sharpness(_chw(frames.cpu())).tolist()


def _sharpness_row(values: list[float], truth: list[float]) -> dict:
    mean, ref = float(np.mean(values)), float(np.mean(truth))
    return {"mean": mean, "ratio_to_truth": mean / ref if ref > 0 else None}


@torch.no_grad()
def next_block(model: WorldModel, clips: Iterable[dict], cases: int, context_blocks: int,
               predictors: dict[str, Rollout | None] | None = None, seed: int = 0,
               counterfactuals: tuple[str, ...] = COUNTERFACTUALS) -> dict:
    """For each clip: observe `context_blocks` true blocks, predict the next one from its actions,
    and again from each counterfactual of them (see worldmodel/eval/counterfactual.py), with the
    same noise.

    predictors: name -> a factory-made Rollout (reset per case); defaults to the model's own.
    Returns per predictor and baseline: PSNR/SSIM mean/median over frames and sharpness (with its
    ratio to the true frames'); per predictor also `actions`: counterfactual -> ActionFollowing
    summary (None where no case had different counterfactual actions).
    """
    bf = model.config.model.block_frames
    c = context_blocks * bf
    predictors = predictors or {"generator": None}
    rows = [*predictors, "copy-last", "ae-ceiling"]
    scores: dict[str, tuple[list, list]] = {k: ([], []) for k in rows}
    kinds: list[str] = []  # per scored frame: what the camera did since the last context frame
    sharp: dict[str, list] = {k: [] for k in [*rows, "truth"]}
    taken = [clip for _, clip in zip(range(cases), clips)]
    if not taken:
        raise ValueError("no clips to evaluate: is the split empty?")
    frames = [torch.as_tensor(clip["frames"][: c + bf]) for clip in taken]  # [L, H, W, 3] uint8
    actions = [torch.as_tensor(clip["actions"][: c + bf]).float() for clip in taken]
    poses = [torch.as_tensor(clip["poses"][: c + bf]).float() for clip in taken]
    futures = [a[c:] for a in actions]
    counters = {k: counterfactual_actions(k, futures, seed) for k in counterfactuals
                if k != "shuffled" or len(taken) > 1}
    following = {name: {k: ActionFollowing() for k in counters} for name in predictors}
    for i in range(len(taken)):
        truth = frames[i][c:]
        kinds.extend(motion_kinds(poses[i][c - 1], poses[i][c:]))
        latents = model.encode(frames[i][None].to(model.device))
        sharp["truth"].extend(_sharp(truth))

        def predict(roll, future):
            return continue_from(model, roll, latents[:, :c], actions[i][:c], future, poses[i][:c],
                                 poses[i][c:], seed=seed * 100003 + i)

        for name, roll in predictors.items():
            roll = roll or model.rollout()
            pred = predict(roll, futures[i])
            p, s = _score(pred, truth)
            scores[name][0].extend(p)
            scores[name][1].extend(s)
            sharp[name].extend(_sharp(pred))
            for k, alt in counters.items():
                if differs(alt[i], futures[i]):
                    other = predict(roll, alt[i])
                    following[name][k].add(p, _score(other, truth)[0], _score(pred, other)[0])
        for name, pred in (("copy-last", frames[i][c - 1:c].expand(bf, -1, -1, -1)),
                           ("ae-ceiling", model.decode(latents[:, c:])[0])):
            p, s = _score(pred, truth)
            scores[name][0].extend(p)
            scores[name][1].extend(s)
            sharp[name].extend(_sharp(pred))
    results = {k: {"psnr": _summary(p), "ssim": _summary(s), "sharpness": _sharpness_row(sharp[k], sharp["truth"]),
                   "psnr_by_motion": _by_motion(p, kinds)}
               for k, (p, s) in scores.items()}
    for name in predictors:
        results[name]["actions"] = {k: f.summary() for k, f in following[name].items()}
    return {"cases": len(taken), "context_blocks": context_blocks,
            "truth_sharpness": float(np.mean(sharp["truth"])), "results": results}


@torch.no_grad()
def memory_reconstruction(model: WorldModel, clips: Iterable[dict], cases: int, blocks: int, seed: int = 0) -> dict:
    """MAG memory fidelity: write `blocks` true blocks through the memory model (one slot each),
    then rebuild every block's frames from the compressed memory alone and compare with the truth.
    Reported for all frames of the block and for the slot's own (last) frame."""
    if model.memory_model is None:
        raise ValueError("this checkpoint has no memory model (memory_model.safetensors)")
    bf = model.config.model.block_frames
    gen = torch.Generator(device=model.device).manual_seed(seed)
    all_p, all_s, last_p, ceil_p = [], [], [], []
    n = 0
    for clip in clips:
        if n >= cases:
            break
        frames = torch.as_tensor(clip["frames"]).to(model.device)[: blocks * bf]
        actions = torch.as_tensor(clip["actions"]).float().to(model.device)[: blocks * bf]
        latents = model.encode(frames[None])
        roll = model.rollout(strategy="mag", capacity=max(blocks, 1), attention_budget=max(blocks, 1))
        for j in range(0, blocks * bf, bf):
            roll.observe(latents[:, j:j + bf], actions[None, j:j + bf])
        for slot in roll.memory.used_slots():
            end = int(roll.memory.frame[slot]) + 1
            rec = model.decode(decode_slot_latents(roll, int(slot), gen))[0]
            p, s = _score(rec, frames[end - bf:end])
            all_p.extend(p)
            all_s.extend(s)
            last_p.append(p[-1])
            ceil_p.extend(_score(model.decode(latents[:, end - bf:end])[0], frames[end - bf:end])[0])
        n += 1
    return {"cases": n, "blocks": blocks, "block_frames": bf,
            "block_psnr": _summary(all_p), "block_ssim": _summary(all_s), "slot_frame_psnr": _summary(last_p),
            "ae_ceiling_psnr": _summary(ceil_p)}
