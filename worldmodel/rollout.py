"""Rollout: the inference loop, block by block, and the one owner of a session's KV memory.

For each block of B frames:
  1. choose what to attend to  (strategy.attend_slots: all slots, or recent + pose-retrieved)
  2. denoise the block in a few steps against that memory view
  3. rerun the clean block (t = 0) to get its keys/values — by the generator itself, or by the
     memory model for `mag` — and store the frames the strategy keeps
  4. `memorypack` only: fold the clean block into the long-term state ψ (SemanticPack), which
     the generator reads as cross-attention context [prompt ; ψ] in steps 2 and 3
A block of real frames from an engine (`observe`) skips step 2.
"""

from __future__ import annotations

import torch

from worldmodel.actions import ACTION_DIM, ACTION_HIGH, ACTION_LOW, POSE_DIM
from worldmodel.config import MemoryConfig, SamplerConfig
from worldmodel.diffusion.flow_matching import step_sigmas, teacher_sigmas
from worldmodel.diffusion.sampler import denoise_block, euler_block
from worldmodel.memory import KVMemory, make_strategy
from worldmodel.model import CausalDiT
from worldmodel.model.semantic_pack import SemanticPack

ACTION_TOLERANCE = 1e-3


class Rollout:
    def __init__(
        self,
        generator: CausalDiT,
        sampler: SamplerConfig,
        memory: MemoryConfig,
        memory_model: CausalDiT | None = None,
        batch: int = 1,
        capacity: int | None = None,
        dtype: torch.dtype = torch.float32,
        euler_steps: int | None = None,
        semantic_pack: SemanticPack | None = None,
    ):
        """euler_steps: sample with the deterministic multi-step Euler solver instead of the
        few-step sampler (how the multi-step teacher is run). semantic_pack: the network that
        updates ψ, needed by (and only used with) the `memorypack` strategy."""
        self.generator = generator
        self.cfg = generator.cfg
        self.strategy = make_strategy(memory, self.cfg.block_frames)
        if self.strategy.writer == "memory_model" and memory_model is None:
            # "MAG without stage 1": the generator writes, but only the last frame is kept.
            memory_model = generator
        self.memory_model = memory_model
        if self.strategy.semantic_state and semantic_pack is None:
            raise ValueError(
                f"memory strategy {self.strategy.name!r} needs a SemanticPack: load a checkpoint with "
                "semantic_pack.safetensors (made by `magworld train memorypack` and `magworld train package`)"
            )
        self.semantic_pack = semantic_pack if self.strategy.semantic_state else None
        self.pack_state: torch.Tensor | None = None  # ψ [B, M, text_dim]; set by the session's first block
        self.sigmas = step_sigmas(sampler)
        self.euler_sigmas = teacher_sigmas(sampler, euler_steps) if euler_steps else None
        self.action_guidance = float(sampler.action_guidance)
        self.batch = batch
        device = next(generator.parameters()).device
        self.memory = KVMemory(self.cfg, capacity or memory.capacity_frames, batch, dtype, device)
        self.next_frame = 0
        # Pose-indexed retrieval when the strategy has it (`mag`); False attends to the newest
        # slots only (an ablation: `magworld eval revisit --strategies "mag (recent only)"`).
        self.retrieval = True

    @property
    def device(self) -> torch.device:
        return self.memory.device

    def reset(self) -> None:
        self.memory.clear()
        self.pack_state = None
        self.next_frame = 0

    def pack_bytes(self) -> int:
        """Bytes of the long-term state ψ held now (0 without `memorypack`)."""
        s = self.pack_state
        return 0 if s is None else s.numel() * s.element_size()

    # ------------------------------------------------------------------ public steps

    @torch.no_grad()
    def generate(
        self,
        actions: torch.Tensor,
        scene: torch.Tensor | None = None,
        poses: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Generate the next block.

        actions: [B, Bf, A] in physical units; scene: [B] int64 (-1 = empty) or None;
        poses: [B, Bf, pose_dim] camera poses of the new frames (for retrieval and the slot table),
        or None; noise: [B, Bf, C, h, w] or None. Returns clean latents [B, Bf, C, h, w].
        """
        actions, poses = self._check(actions, poses)
        cfg = self.cfg
        b, bf = self.batch, cfg.block_frames
        if noise is None:
            noise = torch.randn(
                (b, bf, cfg.latent_channels, cfg.latent_height, cfg.latent_width),
                generator=generator, device=self.device,
            )
        pos = self._positions()
        view = self._view(poses)
        prompt, state = self._context(self.generator.prompt_for_scenes(scene, b))
        rope = self.generator.rope_tables(pos)  # shared by every step of the block

        def conditioned(x, s, a):
            return self.generator(x, s * 1000.0, a, pos, prompt, memory=view, rope=rope, validate=False)

        w = self.action_guidance
        if w == 1.0 or not actions.any():  # (only a guided rollout pays for the device sync of .any())
            def velocity(x, s):
                return conditioned(x, s, actions)
        else:
            still = torch.zeros_like(actions)

            def velocity(x, s):  # action guidance (SamplerConfig.action_guidance)
                v_still = conditioned(x, s, still)
                return v_still + w * (conditioned(x, s, actions) - v_still)

        if self.euler_sigmas is not None:
            x0 = euler_block(velocity, noise, self.euler_sigmas)
        else:
            x0 = denoise_block(velocity, noise, self.sigmas, generator)
        self._write(x0, actions, pos, poses, view, prompt, state)
        return x0

    @torch.no_grad()
    def observe(self, latents: torch.Tensor, actions: torch.Tensor, poses: torch.Tensor | None = None,
                scene: torch.Tensor | None = None) -> None:
        """Write a block of real (encoded) frames into memory as if it had been generated.
        latents [B, Bf, C, h, w]; scene: [B] or None, only read by `memorypack` (the condition
        ψ_0 starts from when this is the session's first block)."""
        actions, poses = self._check(actions, poses)
        want = (self.batch, self.cfg.block_frames, self.cfg.latent_channels, self.cfg.latent_height, self.cfg.latent_width)
        if tuple(latents.shape) != want:
            raise ValueError(f"observed latents must have shape {list(want)}, got {list(latents.shape)}")
        if not torch.isfinite(latents).all():
            raise ValueError("observed latents contain NaN or infinite values")
        pos = self._positions()
        view = self._view(poses)
        context = state = None
        if self.semantic_pack is not None:
            context, state = self._context(self.generator.prompt_for_scenes(scene, self.batch))
        self._write(latents.to(self.device), actions, pos, poses, view, context, state)

    # ------------------------------------------------------------------ internals

    def _context(self, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the generator's cross-attention context, ψ the block reads). Without `memorypack`:
        (prompt [B, Lc, text_dim], None); with it: ([prompt ; ψ] [B, Lc + M, text_dim], ψ), where
        the session's first block starts ψ from its own prompt. Changes nothing: `_write` does."""
        if self.semantic_pack is None:
            return prompt, None
        state = self.pack_state if self.pack_state is not None else self.semantic_pack.initial_state(prompt)
        return torch.cat([prompt, state.to(prompt.dtype)], 1), state

    def _write(self, x0, actions, pos, poses, view, context=None, state=None) -> None:
        writer = self.memory_model if self.strategy.writer == "memory_model" else self.generator
        if self.strategy.kept_frames():
            b, f = x0.shape[:2]
            t0 = torch.zeros(b, f, device=x0.device)
            # The memory model writes with the empty condition (it was trained that way).
            prompt = writer.prompt_for_scenes(None, b) if writer is self.memory_model else None
            if self.semantic_pack is not None:
                prompt = context  # as trained: the clean pass of a block reads the context it was made with
            kvs = writer(x0, t0, actions, pos, prompt, memory=view, kv_only=True, validate=False)
            self.strategy.write_block(self.memory, kvs, pos, poses)
        if self.semantic_pack is not None:
            self.pack_state = self.semantic_pack.update(state, x0)
        self.next_frame += self.cfg.block_frames

    def _view(self, poses):
        """The memory the next block attends to (the strategy's choice, by the block's pose)."""
        query = self._query_pose(poses) if self.retrieval else None
        return self.memory.view(self.strategy.attend_slots(self.memory, query))

    def _positions(self) -> torch.Tensor:
        return torch.arange(self.next_frame, self.next_frame + self.cfg.block_frames, device=self.device)

    @staticmethod
    def _query_pose(poses):
        if poses is None:
            return None
        return poses[0, -1].detach().cpu().numpy()

    def _check(self, actions, poses):
        """Validate on the host (a check on the device would stall it), then move to the device."""
        b, bf = self.batch, self.cfg.block_frames
        host = torch.as_tensor(actions, dtype=torch.float32).cpu()
        if tuple(host.shape) != (b, bf, ACTION_DIM):
            raise ValueError(f"actions must have shape [{b}, {bf}, {ACTION_DIM}] (one row per frame), got {list(host.shape)}")
        if not torch.isfinite(host).all():
            raise ValueError("actions contain NaN or infinite values")
        lo = torch.as_tensor(ACTION_LOW - ACTION_TOLERANCE)
        hi = torch.as_tensor(ACTION_HIGH + ACTION_TOLERANCE)
        if ((host < lo) | (host > hi)).any():
            raise ValueError(
                f"actions out of range: each row is (turn, look, forward, strafe) within "
                f"low={ACTION_LOW.tolist()} high={ACTION_HIGH.tolist()}"
            )
        actions = host.to(self.device, non_blocking=True)
        if poses is not None:
            poses = torch.as_tensor(poses, dtype=torch.float32).cpu()
            if tuple(poses.shape) != (b, bf, POSE_DIM):
                raise ValueError(f"poses must have shape [{b}, {bf}, {POSE_DIM}], got {list(poses.shape)}")
            if not torch.isfinite(poses).all():
                raise ValueError("poses contain NaN or infinite values")
        return actions, poses




def decode_slot_latents(rollout: Rollout, slot: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The memory's own view of a place: denoise a block from noise seeing only the compressed
    memory up to and including `slot` (as the memory model was trained to), by the network that
    wrote the memory. Returns the latents of the block that ends at the slot's frame,
    [B, Bf, C, h, w]; its last frame is the slot's.
    """
    memory, cfg = rollout.memory, rollout.cfg
    if not 0 <= slot < memory.capacity or memory.frame[slot] < 0:
        raise ValueError(f"slot {slot} holds nothing (used slots: {memory.used_slots().tolist()})")
    frame = int(memory.frame[slot])
    earlier = [s for s in memory.used_slots() if memory.frame[s] <= frame]
    budget = rollout.strategy.cfg.attention_budget
    view = memory.view(earlier[-budget:])
    # The network that wrote the slots reads them back: the memory model for `mag` (trained to), the
    # generator for the strategies it writes itself. The memory model reading the generator's K/V
    # decoded `window` slots 3.5 dB worse (22.3 against 25.8 dB on 72 held-out slots, session 10).
    decoder = rollout.memory_model if rollout.strategy.writer == "memory_model" else rollout.generator
    b, bf = rollout.batch, cfg.block_frames
    pos = torch.arange(frame - bf + 1, frame + 1, device=rollout.device)
    actions = torch.zeros(b, bf, cfg.action_dim, device=rollout.device)
    prompt = decoder.prompt_for_scenes(None, b)
    noise = torch.randn((b, bf, cfg.latent_channels, cfg.latent_height, cfg.latent_width),
                        generator=generator, device=rollout.device)
    with torch.no_grad():
        return denoise_block(lambda x, s: decoder(x, s * 1000.0, actions, pos, prompt, memory=view),
                             noise, rollout.sigmas, generator)
