"""Stage `generator`: MAG stage 2 — the memory-aware generator.

Self Forcing + DMD as in stage `dmd`, but the frozen memory model writes the cache (keeping one
frame per block) and the generator only reads it; the generator starts from the memory model's
weights so both share one feature space. Videos are longer (several chunks), and with
probability `--history-prob` (λ) each later chunk is generated with the empty scene condition —
the history loss: the generator must then draw the scene from memory, not from the prompt.
"""

from __future__ import annotations

import torch

from worldmodel.train.stage_dmd import DMDStage


class GeneratorStage(DMDStage):
    """MAG generator: Self Forcing + DMD over long videos, reading the memory model's compressed cache"""

    name = "generator"
    default_clip_blocks = 7  # 1 context block + 2 chunks of 3 generated blocks
    memory_strategy = "mag"

    @classmethod
    def add_arguments(cls, parser):
        super().add_arguments(parser)
        parser.add_argument("--memory-model", required=True, help="run or checkpoint directory of the memory model (frozen)")
        parser.add_argument("--history-prob", type=float, default=0.6,
                            help="λ: probability that a later chunk uses the empty condition (default 0.6)")
        parser.add_argument("--chunk-blocks", type=int, default=3, help="blocks per chunk (default 3)")

    def init_names(self):
        return ("generator", "memory_model", "teacher")

    def build_writer(self):
        extra = self.options.extra
        self.history_prob = float(extra.get("history_prob", 0.6))
        self.chunk_blocks = int(extra.get("chunk_blocks", 3))
        self.writer = self.new_dit(extra["memory_model"], ("memory_model",)).eval().requires_grad_(False)
        if not extra.get("init"):
            self.generator.load_state_dict(self.writer.state_dict())
        self.memory_cfg = self.config.memory.__class__(**{**self.config.memory.__dict__, "strategy": "mag"})

    def chunk_scenes(self, scene: torch.Tensor, n: int) -> list[torch.Tensor]:
        return history_loss_scenes(scene, n, self.chunk_blocks, self.history_prob)


def history_loss_scenes(scene: torch.Tensor, n_blocks: int, chunk_blocks: int, prob: float,
                        generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Per-block scene conditions: the first chunk keeps `scene`; each later chunk is replaced by
    the empty condition (-1) with probability `prob`, independently per sample."""
    out = []
    current = scene
    for i in range(n_blocks):
        if i % chunk_blocks == 0 and i > 0:
            drop = torch.rand(scene.shape, generator=generator, device=scene.device if generator is None else "cpu")
            current = torch.where(drop.to(scene.device) < prob, torch.full_like(scene, -1), scene)
        out.append(current)
    return out
