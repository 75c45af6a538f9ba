"""The PyTorch backend: WorldModel + Rollout, on CPU or CUDA."""

from __future__ import annotations

import numpy as np
import torch

from runtime.backends.base import Backend, EngineSession
from worldmodel.bundle import WorldModel
from worldmodel.rollout import decode_slot_latents


class TorchSession(EngineSession):
    def __init__(self, model: WorldModel, strategy, capacity, attention_budget, seed):
        self.model = model
        self.rollout = model.rollout(strategy, capacity, attention_budget=attention_budget)
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        self.bf = model.config.model.block_frames

    @property
    def next_frame(self) -> int:
        return self.rollout.next_frame

    def reset(self) -> None:
        self.rollout.reset()

    def observe(self, frames, actions, poses):
        n = len(frames)
        if n == 0 or n % self.bf:
            raise ValueError(f"observe needs a whole number of blocks of {self.bf} frames, got {n}")
        latents = self.model.encode(torch.from_numpy(np.ascontiguousarray(frames))[None])
        for i in range(0, n, self.bf):
            p = None if poses is None else torch.from_numpy(poses[None, i:i + self.bf])
            self.rollout.observe(latents[:, i:i + self.bf], torch.from_numpy(actions[None, i:i + self.bf]), p)

    def step(self, actions, poses, scene):
        p = None if poses is None else torch.from_numpy(poses[None])
        s = None if scene is None else torch.tensor([scene], device=self.model.device)
        rng = self.generator.get_state()
        try:
            x0 = self.rollout.generate(torch.from_numpy(actions[None]), s, p, generator=self.generator)
        except BaseException:
            self.generator.set_state(rng)  # a failed step leaves no trace, not even in the noise stream
            raise
        return self.model.decode(x0)[0].cpu().numpy()

    def memory_state(self):
        mem = self.rollout.memory
        state = mem.state()
        full_per_frame = mem.bytes_per_slot  # a full (uncompressed) cache stores every frame
        state["full_cache_bytes"] = self.rollout.next_frame * full_per_frame
        state["strategy"] = self.rollout.strategy.name
        state["slots"] = [
            {"slot": int(s), "frame": int(mem.frame[s]), "pose": mem.pose[0, s].tolist()} for s in mem.used_slots()
        ]
        return state

    def decode_slot(self, slot):
        return self.model.decode(decode_slot_latents(self.rollout, slot, self.generator))[0].cpu().numpy()


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, checkpoint, device: str = "cpu", model: WorldModel | None = None):
        self.model = model if model is not None else WorldModel.load(checkpoint, device)
        super().__init__(self.model.config)

    def new_session(self, strategy=None, capacity=None, attention_budget=None, seed=0):
        return TorchSession(self.model, strategy, capacity, attention_budget, seed)
