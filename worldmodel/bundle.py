"""WorldModel: everything a runtime needs, loaded from one checkpoint directory.

A checkpoint directory holds `config.json` (a WorldModelConfig) and safetensors weights:
`autoencoder`, `generator`, and, for MAG, `memory_model`, for MemoryPack, `semantic_pack` (each a
single file or ≤16 MiB shards).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from worldmodel.autoencoder import Autoencoder, channels_first, frames_to_uint8
from worldmodel.config import WorldModelConfig, apply_overrides
from worldmodel.model import CausalDiT
from worldmodel.model.semantic_pack import SemanticPack
from worldmodel.rollout import Rollout

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"


@dataclass
class WorldModel:
    config: WorldModelConfig
    autoencoder: Autoencoder
    generator: CausalDiT
    memory_model: CausalDiT | None = None
    semantic_pack: SemanticPack | None = None  # the `memorypack` strategy's long-term state network

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "WorldModel":
        """Load a checkpoint directory (safetensors only; never pickle).

        A damaged directory fails here, in one line (CheckpointError), before anything large is
        allocated: the config is checked against `device`'s memory (worldmodel/footprint.py),
        every weights file's header against the networks the config builds, then every weight
        for NaN and infinity."""
        from worldmodel.footprint import check_fits
        from worldmodel.train import checkpoint as ckpt

        directory = ckpt.resolve_checkpoint(directory)
        config = ckpt.load_config(directory)
        has_mem = any(Path(directory).glob("memory_model*.safetensors"))
        has_pack = any(Path(directory).glob("semantic_pack*.safetensors"))
        try:
            config.check_consistent()
            check_fits(config, device, has_mem, has_pack)
        except ValueError as e:
            raise ckpt.CheckpointError(f"{directory / ckpt.CONFIG_FILE}: {e}") from None
        ae = ckpt.build_and_load(lambda: Autoencoder(config.autoencoder), directory, "autoencoder")
        gen = ckpt.build_and_load(lambda: CausalDiT(config.model), directory, "generator")
        mem = ckpt.build_and_load(lambda: CausalDiT(config.model), directory, "memory_model") if has_mem else None
        pack = None
        if has_pack:
            pack = ckpt.build_and_load(lambda: SemanticPack(config.model, config.memory), directory, "semantic_pack")
        return cls(config, ae, gen, mem, pack).to(device).eval()

    @classmethod
    def random(cls, config: WorldModelConfig, seed: int = 0, std: float = 0.05,
               semantic_pack: bool = False) -> "WorldModel":
        """Untrained weights (random, not the zero init) — for tests and speed benchmarks.
        semantic_pack: also a (freshly initialised) SemanticPack, for `memorypack`."""
        torch.manual_seed(seed)
        ae, gen, mem = Autoencoder(config.autoencoder), CausalDiT(config.model), CausalDiT(config.model)
        with torch.no_grad():
            for p in list(gen.parameters()) + list(mem.parameters()):
                p.normal_(0, std)
        pack = SemanticPack(config.model, config.memory) if semantic_pack else None
        return cls(config, ae, gen, mem, pack).eval()

    def save(self, directory: str | Path) -> None:
        from worldmodel.train import checkpoint as ckpt

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ckpt.save_config(directory, self.config)
        ckpt.save_weights(directory, "autoencoder", self.autoencoder.state_dict())
        ckpt.save_weights(directory, "generator", self.generator.state_dict())
        if self.memory_model is not None:
            ckpt.save_weights(directory, "memory_model", self.memory_model.state_dict())
        if self.semantic_pack is not None:
            ckpt.save_weights(directory, "semantic_pack", self.semantic_pack.state_dict())

    def to(self, device) -> "WorldModel":
        for m in self.modules():
            m.to(device)
        return self

    def eval(self) -> "WorldModel":
        for m in self.modules():
            m.eval()
        return self

    def modules(self):
        return [m for m in (self.autoencoder, self.generator, self.memory_model, self.semantic_pack) if m is not None]

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    # ------------------------------------------------------------------ use

    def rollout(self, strategy: str | None = None, capacity: int | None = None, batch: int = 1,
                attention_budget: int | None = None) -> Rollout:
        """A fresh inference loop with its own memory (one per session)."""
        overrides = []
        if strategy:
            overrides.append(f"memory.strategy={strategy}")
        if attention_budget:
            overrides.append(f"memory.attention_budget={attention_budget}")
        if capacity:
            overrides.append(f"memory.capacity_frames={capacity}")
        memory_cfg = apply_overrides(self.config, overrides).memory if overrides else self.config.memory
        return Rollout(self.generator, self.config.sampler, memory_cfg, self.memory_model, batch=batch,
                       semantic_pack=self.semantic_pack)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """RGB uint8 frames [B, F, H, W, 3] -> latents [B, F, C, h, w]."""
        b, f = frames.shape[:2]
        z = self.autoencoder.encode(channels_first(frames.to(self.device)).flatten(0, 1))
        return z.unflatten(0, (b, f))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, F, C, h, w] -> RGB uint8 frames [B, F, H, W, 3]."""
        b, f = latents.shape[:2]
        frames = self.autoencoder.decode(latents.flatten(0, 1))
        return frames_to_uint8(frames).movedim(-3, -1).unflatten(0, (b, f))


def default_checkpoint(device: str) -> Path:
    """The shipped model a runtime loads when none is named: `doom-gpu` on every device (the
    first shipped model that follows the keys; the older `doom-cpu`, which ignored them, was
    removed in session 7 to keep `checkpoints/` within its 60 MB)."""
    return shipped_checkpoint("doom-gpu")


def shipped_checkpoint(name: str) -> Path:
    """Path of a checkpoint shipped in the repository's `checkpoints/` folder."""
    path = SHIPPED / name
    if not (path / "config.json").is_file():
        have = sorted(p.name for p in SHIPPED.iterdir() if (p / "config.json").is_file()) if SHIPPED.is_dir() else []
        raise FileNotFoundError(f"no shipped checkpoint {name!r} in {SHIPPED}; available: {have or 'none'}")
    return path
