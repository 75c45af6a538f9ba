"""Counterfactual actions: does the model follow the keys at all?

PSNR against the truth alone cannot tell a model that follows the actions from one that ignores
them: both can score the same on average. So every prediction is made again, from the same
context and the same noise, with actions that are wrong on purpose, and scored against the same
truth:

  mirrored turns  the turn component(s) negated (turning left becomes turning right)
  shuffled        each case gets another case's action sequence (a permutation without fixed
                  points, so no case keeps its own)

Reported per counterfactual, over the cases whose counterfactual actions differ from the true ones:
  delta_db                      PSNR(true actions) − PSNR(counterfactual), vs the truth, in dB:
                                > 0 means the true actions explain the truth better
  true_vs_counterfactual_psnr   PSNR between the two generations themselves: >= 50 dB means the
                                action changes (practically) nothing
  true_better_fraction          share of cases where the true actions score higher
"""

from __future__ import annotations

import numpy as np
import torch

from worldmodel.actions import ACTION_NAMES
from worldmodel.metrics import psnr

TURN_COMPONENTS = (ACTION_NAMES.index("turn"),)  # yaw: the component a left/right mirror negates
COUNTERFACTUALS = ("mirrored turns", "shuffled")
PSNR_CAP = 60.0  # dB, as everywhere in the evaluations: identical frames would average to infinity
IGNORES_ACTIONS_DB = 50.0  # true-vs-counterfactual generations closer than this: the action changes nothing
SAME_ACTIONS_TOLERANCE = 1e-6


def frame_psnr(a, b) -> np.ndarray:
    """Videos uint8 [F, H, W, 3] each (numpy or torch) -> per-frame PSNR [F], capped at PSNR_CAP."""
    ta, tb = (torch.as_tensor(np.asarray(x)).movedim(-1, -3) for x in (a, b))
    return np.minimum(psnr(ta, tb).numpy(), PSNR_CAP)


def mirror_turns(actions: torch.Tensor) -> torch.Tensor:
    """actions [..., A] -> a copy with the turn component(s) negated (left <-> right)."""
    out = actions.clone()
    out[..., list(TURN_COMPONENTS)] = -out[..., list(TURN_COMPONENTS)]
    return out


def derangement(n: int, rng: np.random.Generator) -> list[int]:
    """A random permutation of range(n) with no fixed point (n >= 2): case i takes perm[i]'s actions."""
    if n < 2:
        raise ValueError(f"shuffling actions across cases needs at least 2 cases, got {n}")
    order = rng.permutation(n)
    perm = [0] * n
    for k in range(n):  # a single cycle through a random order: nobody keeps their own
        perm[order[k]] = int(order[(k + 1) % n])
    return perm


def counterfactual_actions(kind: str, actions: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    """The counterfactual action sequences of `kind` for a list of cases' actions (each [T, A])."""
    if kind == "mirrored turns":
        return [mirror_turns(a) for a in actions]
    if kind == "shuffled":
        perm = derangement(len(actions), np.random.default_rng(seed))
        return [actions[j].clone() for j in perm]
    raise ValueError(f"unknown counterfactual {kind!r}; choose from {list(COUNTERFACTUALS)}")


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two action sequences differ at all (a case without a turn has nothing to mirror)."""
    return a.shape != b.shape or bool((a.float() - b.float()).abs().max() > SAME_ACTIONS_TOLERANCE)


class ActionFollowing:
    """Accumulates, for one predictor and one counterfactual, per-case frame PSNRs:
    generated-with-true vs truth, generated-with-counterfactual vs truth, and true vs counterfactual
    generation. Call `add` once per case whose counterfactual actions differ from the true ones."""

    def __init__(self):
        self.true, self.counter, self.between = [], [], []

    def add(self, psnr_true: list[float], psnr_counterfactual: list[float], psnr_between: list[float]) -> None:
        cap = lambda v: np.minimum(np.asarray(v, np.float64), PSNR_CAP)  # noqa: E731
        self.true.append(cap(psnr_true))
        self.counter.append(cap(psnr_counterfactual))
        self.between.append(cap(psnr_between))

    def summary(self) -> dict | None:
        if not self.true:
            return None
        t = np.array([v.mean() for v in self.true])
        c = np.array([v.mean() for v in self.counter])
        between = np.concatenate(self.between)
        return {
            "psnr_true": float(t.mean()), "psnr_counterfactual": float(c.mean()),
            "delta_db": float((t - c).mean()), "true_better_fraction": float((t > c).mean()),
            "true_vs_counterfactual_psnr": {"mean": float(between.mean()), "median": float(np.median(between))},
            "ignores_actions": bool(between.mean() >= IGNORES_ACTIONS_DB),
            "cases": len(t),
        }
