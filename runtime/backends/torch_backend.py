"""The PyTorch backend: WorldModel + Rollout, on CPU or CUDA."""

from __future__ import annotations

import numpy as np
import torch

from runtime.backends.base import Backend, EngineSession
from worldmodel.bundle import WorldModel
from worldmodel.rollout import decode_slot_latents
from worldmodel.rollout_batch import batch_key, generate_together


class TorchSession(EngineSession):
    def __init__(self, model: WorldModel, strategy, capacity, attention_budget, seed):
        self.model = model
        self.rollout = model.rollout(strategy, capacity, attention_budget=attention_budget)
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        self.bf = model.config.model.block_frames

    @property
    def next_frame(self) -> int:
        return self.rollout.next_frame

    @property
    def retrieval(self) -> bool:
        return self.rollout.retrieval

    @retrieval.setter
    def retrieval(self, on: bool) -> None:
        self.rollout.retrieval = on

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
        state["frames_per_slot"] = self.rollout.strategy.frames_per_slot
        pack = self.rollout.pack_bytes()  # MemoryPack's long-term state ψ (0 for other strategies)
        if pack:
            state["pack_bytes"] = pack
            state["bytes_held"] += pack
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

    def strategies(self):
        # `memorypack` needs the SemanticPack network, which only some checkpoints hold.
        return super().strategies() + (("memorypack",) if self.model.semantic_pack is not None else ())

    def new_session(self, strategy=None, capacity=None, attention_budget=None, seed=0):
        return TorchSession(self.model, strategy, capacity, attention_budget, seed)

    batches_steps = True

    def step_many(self, sessions, actions, poses, scenes):
        """Sessions whose rollouts can share a pass (same networks, strategy and sampler; see
        worldmodel/rollout_batch.py) are generated and decoded together; the rest, and any group
        whose batched pass fails, step one by one (so one session's failure is its own)."""
        groups: dict = {}
        for i, s in enumerate(sessions):
            key = batch_key(s.rollout) if isinstance(s, TorchSession) else None
            groups.setdefault(("alone", i) if key is None else key, []).append(i)
        out: list = [None] * len(sessions)
        sizes = [1] * len(sessions)
        for idx in groups.values():
            if len(idx) > 1:
                group = [sessions[i] for i in idx]
                rng = [s.generator.get_state() for s in group]
                try:
                    x0 = generate_together(
                        [s.rollout for s in group], [torch.from_numpy(actions[i][None]) for i in idx],
                        [None if scenes[i] is None else torch.tensor([scenes[i]], device=self.model.device) for i in idx],
                        [None if poses[i] is None else torch.from_numpy(poses[i][None]) for i in idx],
                        [s.generator for s in group])
                    frames = self.model.decode(x0).cpu().numpy()  # [n, Bf, H, W, 3]
                    for j, i in enumerate(idx):
                        out[i], sizes[i] = frames[j], len(idx)
                    continue
                except Exception:
                    for s, state in zip(group, rng):
                        s.generator.set_state(state)
            sub = Backend.step_many(self, [sessions[i] for i in idx], [actions[i] for i in idx],
                                    [poses[i] for i in idx], [scenes[i] for i in idx])
            for i, r in zip(idx, sub):
                out[i] = r
        self.last_pass_sizes = sizes
        return out
