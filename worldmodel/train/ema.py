"""Exponential moving average of a model's parameters (the weights that inference uses)."""

from __future__ import annotations

import torch
from torch import nn

from worldmodel.train.distributed import is_dtensor as _is_dtensor, shard_like


class EMA:
    """shadow <- decay * shadow + (1 - decay) * param, in float32; buffers are copied as they are.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates so that the
    average is not dominated by the random initialisation in short runs.

    Made from an FSDP-sharded model, the shadow is sharded like its parameters (the update is
    elementwise, so each rank averages its own shard: no communication, 1/N of the memory).
    `state_dict()` then holds DTensor shards; the trainer gathers them (`full_state`) to save.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            k: v.detach().float().clone() for k, v in model.named_parameters()
        }
        self.buffers: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in model.named_buffers()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        # One fused launch per dtype group instead of a kernel per parameter: at small model sizes
        # the per-parameter loop cost as much as the training step itself.
        names, params = zip(*model.named_parameters()) if self.shadow else ((), ())
        shadows = [self.shadow[k] for k in names]
        plain = [s for s in shadows if not _is_dtensor(s)]
        if len(plain) == len(shadows) and shadows:
            torch._foreach_lerp_(shadows, [p.detach().float() for p in params], 1.0 - d)
        else:
            for s, p in zip(shadows, params):
                s.lerp_(p.detach().float(), 1.0 - d)
        for k, b in model.named_buffers():
            self.buffers[k].copy_(b)
        self.updates += 1

    def state_dict_for(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with EMA weights, in the model's dtypes (what gets shipped).
        Unsharded models only; for FSDP, gather both states and use `ema_weights`."""
        return ema_weights(self.state_dict(), model.state_dict())

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters and buffers with the EMA's."""
        model.load_state_dict(self.state_dict_for(model))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow), "buffers": dict(self.buffers)}

    def load_state_dict(self, state: dict) -> None:
        """From whole tensors (as saved), also into a sharded EMA."""
        if set(state["shadow"]) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(state["shadow"]))[:3]
            extra = sorted(set(state["shadow"]) - set(self.shadow))[:3]
            raise ValueError(f"EMA state does not fit the model: missing {missing}, unexpected {extra}")
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(shard_like(v, self.shadow[k]))
        for k, v in state["buffers"].items():
            self.buffers[k].copy_(v)


def ema_weights(ema_state: dict, model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`model_state` (keys, dtypes) with the values of `ema_state` (an `EMA.state_dict()`), on CPU."""
    out = {}
    for k, v in model_state.items():
        src = ema_state["shadow"].get(k, ema_state["buffers"].get(k, v))
        out[k] = src.detach().to(dtype=v.dtype, device="cpu").clone()
    return out
