"""Stage `generator`: MAG stage 2 — the memory-aware generator.

Self Forcing + DMD as in stage `dmd`, but the frozen memory model writes the cache (keeping one
frame per block) and the generator only reads it; the generator starts from the memory model's
weights so both share one feature space. Videos are longer (several chunks), and with
probability `--history-prob` (λ) each later chunk is generated with the empty scene condition —
the history loss: the generator must then draw the scene from memory, not from the prompt.

`--history-blocks H` trains on memories as long as inference holds: each clip comes with the H
blocks of the same episode before it, written by the frozen memory model into a slot table
(one forward, no gradient), of which each step keeps a sampled sub-history (all slots with
probability `--history-full-prob`); see train/sub_history.py. H + `--clip-blocks` up to the
preset's memory.capacity_frames covers every slot `mag (all slots)` can attend to. H = 0 (the
default) is the short-clip stage as before.
"""

from __future__ import annotations

import torch

from worldmodel.model.masks import memory_write
from worldmodel.train.stage_dmd import DMDStage
from worldmodel.train.sub_history import build_slot_table, sample_sub_history


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
        parser.add_argument("--history-blocks", type=int, default=0, metavar="H",
                            help="blocks of real frames before each clip, compressed by the memory model into "
                            "slots the rollout attends to (default 0: no history)")
        parser.add_argument("--history-full-prob", type=float, default=0.5,
                            help="probability that a step keeps every history slot; otherwise a random "
                            "sub-history of 0..H slots, the newest always kept (default 0.5)")
        parser.add_argument("--history-window", type=int, default=None, metavar="SLOTS",
                            help="slots the memory model sees while writing the history (default: "
                            "memory.attention_budget, as `mag` at inference; 0: all earlier slots)")

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
        self.history_blocks = int(extra.get("history_blocks") or 0)
        self.history_full_prob = float(extra.get("history_full_prob", 0.5))
        window = extra.get("history_window")
        window = self.config.memory.attention_budget if window is None else int(window)
        if self.history_blocks < 0 or window < 0 or not 0 <= self.history_full_prob <= 1:
            raise ValueError("--history-blocks and --history-window must be >= 0, --history-full-prob in [0, 1]")
        self.history_mask = memory_write(self.history_blocks * self.block, self.block, window or None, self.device)

    def history_table(self, latents, actions, pos0):
        """The slots of the history before the clip (frames pos0 - H*B .. pos0 - 1), as a sampled
        sub-history of the memory model's slot table."""
        h = latents.shape[1]
        positions = torch.arange(pos0 - h, pos0)  # host: build_slot_table reads the slots' frames from it
        table = build_slot_table(self.writer, latents, actions, positions, self.history_mask, self.autocast)
        return table.select(sample_sub_history(table.slots, self.memory_cfg.attention_budget // 2,
                                               self.history_full_prob))

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
