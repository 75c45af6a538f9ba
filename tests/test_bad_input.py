"""Bad input raises a clear error that names the problem."""

import pytest
import torch

from helpers import clip_inputs, tiny_model
from worldmodel.rollout import Rollout


def test_wrong_latent_shape(tiny):
    model = tiny_model(tiny)
    x, t, a = clip_inputs(tiny, frames=3)
    with pytest.raises(ValueError, match=r"latents must have shape \[batch, frames, 4, 3, 4\]"):
        model(x[..., :2], t, a, torch.arange(3))


def test_wrong_action_dimension(tiny):
    model = tiny_model(tiny)
    x, t, a = clip_inputs(tiny, frames=3)
    with pytest.raises(ValueError, match=r"actions must have shape \[2, 3, 4\]"):
        model(x, t, a[..., :3], torch.arange(3))


def test_non_finite_values(tiny):
    model = tiny_model(tiny)
    x, t, a = clip_inputs(tiny, frames=3)
    x[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="latents contain NaN"):
        model(x, t, a, torch.arange(3))


def test_rollout_rejects_bad_actions_without_touching_memory(tiny):
    tiny.memory.strategy = "full"
    roll = Rollout(tiny_model(tiny), tiny.sampler, tiny.memory)
    roll.generate(torch.zeros(1, 3, 4))
    state = roll.memory.state(), roll.next_frame
    for bad, msg in [
        (torch.zeros(1, 2, 4), "one row per frame"),
        (torch.full((1, 3, 4), float("nan")), "NaN"),
        (torch.full((1, 3, 4), 1e6), "out of range"),
    ]:
        with pytest.raises(ValueError, match=msg):
            roll.generate(bad)
    assert (roll.memory.state(), roll.next_frame) == state


def test_unknown_strategy_and_preset():
    from worldmodel.config import MemoryConfig, preset
    from worldmodel.memory import make_strategy

    with pytest.raises(ValueError, match="unknown memory strategy 'lru'"):
        make_strategy(MemoryConfig(strategy="lru"), 3)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
