"""Next-block prediction given true history and actions, and memory-slot reconstruction.

PSNR is capped at 60 dB per frame before averaging. Every figure is reported beside two references measured on the same frames:
  copy-last  the trivial baseline: repeat the last observed true frame
  ae-ceiling what the autoencoder alone gives (decode(encode(truth))) — no predictor can beat it
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from worldmodel.bundle import WorldModel
from worldmodel.metrics import psnr, ssim
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
def next_block(model: WorldModel, clips: Iterable[dict], cases: int, context_blocks: int,
               predictors: dict[str, Rollout | None] | None = None, seed: int = 0) -> dict:
    """For each clip: observe `context_blocks` true blocks, predict the next one from its actions.

    predictors: name -> a factory-made Rollout (reset per case); defaults to the model's own.
    Returns per predictor and baseline: PSNR/SSIM mean/median over frames.
    """
    bf = model.config.model.block_frames
    predictors = predictors or {"generator": None}
    scores: dict[str, tuple[list, list]] = {k: ([], []) for k in [*predictors, "copy-last", "ae-ceiling"]}
    gen = torch.Generator(device=model.device).manual_seed(seed)
    n = 0
    for clip in clips:
        if n >= cases:
            break
        frames = torch.as_tensor(clip["frames"]).to(model.device)  # [L, H, W, 3]
        actions = torch.as_tensor(clip["actions"]).float().to(model.device)
        poses = torch.as_tensor(clip["poses"]).float()
        # Held-out maps have no trained scene prompt: predict with the empty condition.
        scene = torch.full((1,), -1, dtype=torch.long, device=model.device)
        c = context_blocks * bf
        truth = frames[c:c + bf]
        latents = model.encode(frames[None, : c + bf])
        for name, roll in predictors.items():
            roll = roll or model.rollout()
            roll.reset()
            for j in range(0, c, bf):
                roll.observe(latents[:, j:j + bf], actions[None, j:j + bf], poses[None, j:j + bf])
            x0 = roll.generate(actions[None, c:c + bf], scene, poses[None, c:c + bf], generator=gen)
            p, s = _score(model.decode(x0)[0], truth)
            scores[name][0].extend(p)
            scores[name][1].extend(s)
        p, s = _score(frames[c - 1:c].expand(bf, -1, -1, -1), truth)
        scores["copy-last"][0].extend(p)
        scores["copy-last"][1].extend(s)
        p, s = _score(model.decode(latents[:, c:c + bf])[0], truth)
        scores["ae-ceiling"][0].extend(p)
        scores["ae-ceiling"][1].extend(s)
        n += 1
    if n == 0:
        raise ValueError("no clips to evaluate: is the split empty?")
    return {"cases": n, "context_blocks": context_blocks,
            "results": {k: {"psnr": _summary(p), "ssim": _summary(s)} for k, (p, s) in scores.items()}}


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
