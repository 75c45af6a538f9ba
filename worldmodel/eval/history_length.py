"""Does a longer true history help or hurt the next block? The same target block, predicted after
N true blocks of its episode, for several N and memory strategies.

A model that reads its memory well gets better (or no worse) as N grows: more of the place is in
memory. One that was trained only on short clips can get worse: the history's slots lie at
temporal distances and in numbers it never saw, and with `mag` they are the memory model's
compressed slots, which a generator must have been trained to read (MAG stage 2). Session 9
found both on the shipped doom-gpu bundle (docs/results.md, "Session 9").

Every prediction observes true frames only (no generated history), so exposure bias plays no part;
the target and the noise are the same for every N, so the rows differ only by the history.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from worldmodel.bundle import WorldModel
from worldmodel.eval.prediction import PSNR_CAP, _score, continue_from
from worldmodel.eval.revisit import STRATEGIES, row_rollout


@torch.no_grad()
def history_length(model: WorldModel, clips: Iterable[dict], cases: int, lengths: list[int],
                   strategies: list[str], seed: int = 0) -> dict:
    """clips: dicts with frames [L, H, W, 3] uint8, actions [L, A], poses [L, pose_dim], L >= (max(lengths) + 1)
    blocks. Returns {"lengths", "cases", "psnr": {strategy: {N: mean PSNR}}, "copy-last", "ae-ceiling"}
    (PSNR per frame capped at 60 dB, averaged over the target frames of every case)."""
    if not lengths or min(lengths) < 1:
        raise ValueError(f"history lengths must be whole numbers of blocks >= 1, got {lengths}")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}: choose from {list(STRATEGIES)}")
    bf = model.config.model.block_frames
    c = max(lengths) * bf
    rolls = {s: row_rollout(model, STRATEGIES[s]) for s in strategies}
    scores = {s: {n: [] for n in lengths} for s in strategies}
    copy_last, ceiling = [], []
    n_cases = 0
    for i, clip in zip(range(cases), clips):
        frames = torch.as_tensor(clip["frames"][: c + bf])
        if len(frames) < c + bf:
            raise ValueError(f"clip of {len(frames)} frames: the longest history needs {c + bf}")
        actions = torch.as_tensor(clip["actions"][: c + bf]).float()
        poses = torch.as_tensor(clip["poses"][: c + bf]).float()
        latents = model.encode(frames[None].to(model.device))
        truth = frames[c:]
        copy_last += _score(frames[c - 1:c].expand(bf, -1, -1, -1), truth)[0]
        ceiling += _score(model.decode(latents[:, c:])[0], truth)[0]
        for s, roll in rolls.items():
            for n in lengths:
                start = c - n * bf
                pred = continue_from(model, roll, latents[:, start:c], actions[start:c], actions[c:],
                                     poses[start:c], poses[c:], seed=seed * 100003 + i)
                scores[s][n] += _score(pred, truth)[0]
        n_cases += 1
    if n_cases == 0:
        raise ValueError("no clips to evaluate: is the split empty?")
    mean = lambda v: float(np.minimum(np.asarray(v, np.float64), PSNR_CAP).mean())  # noqa: E731
    return {"lengths": lengths, "cases": n_cases, "block_frames": bf,
            "psnr": {s: {str(n): mean(v) for n, v in per.items()} for s, per in scores.items()},
            "copy-last": mean(copy_last), "ae-ceiling": mean(ceiling)}


def table(result: dict) -> str:
    """The result as a plain table: one row per strategy, one column per history length."""
    lengths = result["lengths"]
    head = "history (blocks)".ljust(18) + "".join(f"{n:>8}" for n in lengths)
    rows = [s.ljust(18) + "".join(f"{v[str(n)]:8.2f}" for n in lengths) for s, v in result["psnr"].items()]
    refs = [f"copy-last {result['copy-last']:.2f} dB, autoencoder ceiling {result['ae-ceiling']:.2f} dB, "
            f"{result['cases']} cases"]
    return "\n".join([head, *rows, *refs])
