"""Stage `memorypack`: the MemoryPack baseline (seed 2) — the 4-step generator with a window of
recent frames (short-term) and a learned long-term state ψ (SemanticPack, long-term).

The generator starts from a 4-step generator run (`--init`); the SemanticPack starts fresh (or
from `--init` when that run has one). Each clip of `--clip-blocks` blocks is laid out as
[clean ; noisy] in one forward, under the `window_forcing` mask: block j (clean and noisy copy)
sees its own block, the sink frames and the last W clean frames before it — what the `window`
strategy holds at inference — and nothing older. What lies beyond the window can only arrive
through ψ_j = Squeeze(ψ_{j-1}, Memorize(clean block j-1)), computed over the true clean blocks
with gradient through the whole chain, and read by cross-attention with context [prompt ; ψ_j].
Noise levels come from the 4-step list, one per block; loss: MSE of the predicted clean latents
of the noisy blocks — the objective of the `memory` stage, so the comparison with MAG is on
equal terms. With probability `--history-prob` a clip's scene condition is empty, as in MAG's
history loss, so the model must carry the scene in ψ rather than read it from the prompt.
Saves `generator` and `semantic_pack` (EMA weights); one AdamW (two parameter groups, `--pack-lr`)
steps both. Several processes: DDP over the pair (PackedGenerator), not FSDP.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from worldmodel.diffusion.flow_matching import step_sigmas
from worldmodel.model import CausalDiT
from worldmodel.model.masks import window_forcing
from worldmodel.model.semantic_pack import SemanticPack
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.ema import EMA
from worldmodel.train.latent_stage import LatentStage, paired_velocity


class PackedGenerator(nn.Module):
    """Generator + SemanticPack as one module, so that one forward (and DDP) covers both.

    Called like CausalDiT on the paired layout x = [clean ; noisy] ([b, 2F, C, h, w]): the clean
    half makes ψ_0..ψ_{K-1}, and every frame of block j, in both halves, reads [prompt ; ψ_j].
    """

    def __init__(self, generator: CausalDiT, pack: SemanticPack):
        super().__init__()
        self.generator = generator
        self.pack = pack

    def forward(self, x, t, actions, frame_pos, frame_mask=None, scene=None, validate=True):
        b, f2 = x.shape[:2]
        f, bf = f2 // 2, self.generator.cfg.block_frames
        prompt = self.generator.prompt_for_scenes(scene, b, check=validate)  # [b, Lc, Dt]
        states = self.pack.states(prompt, x[:, :f])  # [b, K, M, Dt]
        k = states.shape[1]
        context = torch.cat([prompt[:, None].expand(-1, k, -1, -1).to(states.dtype), states], 2)
        context = context.repeat_interleave(bf, 1).repeat(1, 2, 1, 1)  # [b, 2F, Lc + M, Dt]
        return self.generator(x, t, actions, frame_pos, context, frame_mask=frame_mask, validate=validate)


class MemoryPackStage(LatentStage):
    """MemoryPack baseline: window of recent frames + a learned long-term state ψ (SemanticPack)"""

    name = "memorypack"
    default_lr = 1e-4
    default_clip_blocks = 8

    @classmethod
    def add_arguments(cls, parser):
        super().add_arguments(parser)
        parser.add_argument("--history-prob", type=float, default=0.6,
                            help="probability that a clip uses the empty scene condition, as MAG's history loss "
                                 "(default 0.6; replaces --scene-dropout in this stage)")
        parser.add_argument("--pack-lr", type=float, default=None,
                            help="learning rate of the SemanticPack (default: --lr)")

    def build_models(self) -> None:
        extra = self.options.extra
        init = extra.get("init")
        if not init:
            raise ValueError("stage memorypack needs --init RUN: the 4-step generator run to start from")
        self.history_prob = float(extra.get("history_prob", 0.6))
        self.generator = self.new_dit(init, ("generator",))
        self.pack = SemanticPack(self.config.model, self.config.memory).to(self.device)
        init_dir = ckpt.resolve_checkpoint(init)
        if any(init_dir.glob("semantic_pack*.safetensors")):
            ckpt.load_module(self.pack, init_dir, "semantic_pack")
        self.net = self.ddp(PackedGenerator(self.generator, self.pack))
        pack_lr = float(extra.get("pack_lr") or self.lr)
        self.optimizer = torch.optim.AdamW(
            [{"params": list(self.generator.parameters())}, {"params": list(self.pack.parameters()), "lr": pack_lr}],
            lr=self.lr, betas=(0.9, 0.99), weight_decay=self.options.weight_decay,
        )
        self.ema = EMA(self.generator, decay=self.options.ema_decay)
        self.pack_ema = EMA(self.pack, decay=self.options.ema_decay)
        mem = self.config.memory
        self.mask = window_forcing(self.clip_frames, self.block, mem.window_frames, mem.sink_frames, self.device)
        self.levels = torch.as_tensor(step_sigmas(self.config.sampler), device=self.device)
        # blocks whose history reaches beyond the window: only ψ can carry what they miss
        beyond = torch.arange(self.clip_blocks) * self.block > mem.sink_frames + mem.window_frames
        self.beyond = torch.nonzero(beyond).flatten().to(self.device)

    def models(self):
        return {"generator": self.generator, "semantic_pack": self.pack}

    def optimizers(self):
        return {"generator": self.optimizer}  # one AdamW over both networks (two parameter groups)

    def emas(self):
        return {"generator": self.ema, "semantic_pack": self.pack_ema}

    def train_step(self, batch, step):
        x0 = self.encode(batch)
        b, f = x0.shape[:2]
        k = torch.randint(0, len(self.levels), (b, f // self.block), device=self.device)
        s = self.levels[k].repeat_interleave(self.block, 1)  # one level per block
        x_t = (1 - s[..., None, None, None]) * x0 + s[..., None, None, None] * torch.randn_like(x0)
        scene = self.scenes(batch, p_drop=self.history_prob)
        v = paired_velocity(self.net, x0, x_t, s, batch["actions"].float(), self.positions(f, 2), self.mask,
                            scene, self.autocast)
        pred = x_t - s[..., None, None, None] * v
        per_block = (pred - x0).square().unflatten(1, (f // self.block, self.block)).mean(dim=(0, 2, 3, 4, 5))
        loss = per_block.mean()
        metrics = {"loss": loss.detach(), "latent_psnr": -10 * torch.log10(loss.detach().clamp_min(1e-12))}
        if len(self.beyond):
            metrics["loss_beyond_window"] = per_block.detach().index_select(0, self.beyond).mean()
        metrics["grad_norm"] = self.optimize(loss, "generator")  # steps both networks, EMA of the generator
        self.pack_ema.update(self.pack)
        return metrics
