"""Stage `dmd`: Self Forcing with distribution matching distillation (the 4-step generator).

Each step: the generator rolls out blocks from its own outputs after one real context block
(self_forcing.py); the rollout is noised at a random level and two score models judge it — the
frozen teacher (real score) and a "fake" score model trained on the generator's outputs.
DMD moves the generator along (fake x0 - real x0). The fake score is trained by flow matching
on generator outputs every step; the generator is updated every `--critic-steps` steps.
Both scores see the teacher-forcing layout [clean history ; noisy clip], as the teacher did.

Compiled with `--compile` (auto: on CUDA): the two score models whole (their clips have one fixed
shape), the generator and the memory writer only in their token paths (worldmodel/model/fused.py:
a rollout's memory grows block by block, and the token paths are the same for every length).
A step is otherwise a few hundred small launches per network pass, dozens of passes a step
(`magworld bench train --stage dmd` counts them).
"""

from __future__ import annotations

import torch

from worldmodel.diffusion.flow_matching import shift_sigma, step_sigmas
from worldmodel.model.fused import compile_token_paths
from worldmodel.model.masks import teacher_forcing
from worldmodel.train.ema import EMA
from worldmodel.train.latent_stage import LatentStage, paired_velocity
from worldmodel.train.self_forcing import self_forcing_rollout
from worldmodel.train.stage_teacher import flow_matching_loss


class DMDStage(LatentStage):
    """4-step generator by Self Forcing + DMD against the teacher"""

    name = "dmd"
    default_lr = 2e-5
    default_clip_blocks = 4  # 1 real context block + 3 generated
    memory_strategy = "full"  # the generator writes every frame (Self Forcing)
    history_blocks = 0  # blocks of real frames before each clip, held as memory (stage `generator`)

    @classmethod
    def add_arguments(cls, parser):
        super().add_arguments(parser)
        parser.add_argument("--teacher", required=True, help="run or checkpoint directory of the teacher (real score)")
        parser.add_argument("--critic-steps", type=int, default=5,
                            help="fake-score updates per generator update (default 5)")
        parser.add_argument("--fake-lr", type=float, default=None, help="fake score learning rate (default: --lr)")
        parser.add_argument("--guidance", type=float, default=1.0,
                            help="classifier-free guidance of the real score on the scene condition (default 1: none)")

    def build_models(self) -> None:
        extra = self.options.extra
        self.critic_steps = int(extra.get("critic_steps", 5))
        self.guidance = float(extra.get("guidance", 1.0))
        self.teacher = self.new_dit(extra["teacher"], ("teacher",)).eval().requires_grad_(False)
        self.generator = self.new_dit(extra.get("init") or extra["teacher"], self.init_names())
        self.fake = self.new_dit(extra["teacher"], ("teacher",))
        self.build_writer()  # may load the generator's weights: before sharding it and starting its EMA
        # the dataset's clips: `history_blocks` blocks of history, then the clip that is trained
        self.clip_frames = (self.history_blocks + self.clip_blocks) * self.block
        self.gen_net = self.parallel(self.generator)
        self.teacher_net = self.compiled(self.teacher)
        self.fake_net = self.compiled(self.parallel(self.fake))
        if self.compile_enabled():
            compile_token_paths(self.generator)
            if self.writer is not self.generator:  # stage generator: the frozen memory model writes
                compile_token_paths(self.writer)
        self.gen_opt = self.adamw(self.generator, lr=self.lr, betas=(0.0, 0.999))
        self.fake_opt = self.adamw(self.fake, lr=float(extra.get("fake_lr") or self.lr), betas=(0.0, 0.999))
        self.ema = EMA(self.generator, decay=self.options.ema_decay)
        self.mask = teacher_forcing(self.clip_blocks * self.block, self.block, self.device)
        self.sigmas = step_sigmas(self.config.sampler)

    def init_names(self):
        return ("generator", "teacher")

    def build_writer(self):
        self.writer = self.generator
        self.memory_cfg = self.config.memory.__class__(**{**self.config.memory.__dict__, "strategy": self.memory_strategy})

    def models(self):
        return {"generator": self.generator, "fake_score": self.fake}

    def optimizers(self):
        return {"generator": self.gen_opt, "fake_score": self.fake_opt}

    def emas(self):
        return {"generator": self.ema}

    # ------------------------------------------------------------------

    def chunk_scenes(self, scene: torch.Tensor, n: int) -> list[torch.Tensor]:
        """The generator's condition for each generated block."""
        return [scene] * n

    def history_table(self, latents, actions, pos0):
        """The memory held before the clip (history latents [b, H*B, ...] at frames pos0 - H*B ..
        pos0 - 1): None here; stage `generator` builds a slot table (train/sub_history.py)."""
        return None

    def rollout(self, x0, actions, scene, pos0, grad, history=None):
        ctx = x0[:, : self.block]
        n = self.clip_blocks - 1
        return self_forcing_rollout(self.gen_net, self.writer, self.memory_cfg, self.config.model, ctx, actions,
                                    self.chunk_scenes(scene, n), self.sigmas, pos0, self.autocast, grad=grad,
                                    history=history)

    def score_x0(self, net, clean, noisy, s, actions, scene, pos):
        """x0 predicted by a score model for the noisy half [b, F] (teacher-forcing layout)."""
        v = paired_velocity(net, clean, noisy, s, actions, pos, self.mask, scene, self.autocast)
        if net is self.teacher_net and self.guidance != 1.0:
            empty = torch.full_like(scene, -1)
            v_u = paired_velocity(net, clean, noisy, s, actions, pos, self.mask, empty, self.autocast)
            v = v_u + self.guidance * (v - v_u)
        return noisy - s[..., None, None, None] * v

    def train_step(self, batch, step):
        x0 = self.encode(batch)
        actions = batch["actions"].float()
        scene = self.scenes(batch)
        h = self.history_blocks * self.block  # history first, then the clip: [b, h + F, ...]
        hist_x0, hist_actions, x0, actions = x0[:, :h], actions[:, :h], x0[:, h:], actions[:, h:]
        b, f = x0.shape[:2]
        pos0 = self.position_offset() + h  # the clip's first frame, after the history
        pos = self.positions(f, 2, offset=pos0)
        update_gen = step % self.critic_steps == 0
        history = self.history_table(hist_x0, hist_actions, pos0) if h else None
        gen = self.rollout(x0, actions, scene, pos0, grad=update_gen, history=history)  # [b, F - B, ...]
        clip = torch.cat([x0[:, : self.block], gen], 1)
        metrics = {}

        if update_gen:
            s = shift_sigma(torch.rand(b, 1, device=self.device) * 0.96 + 0.02, self.config.sampler.shift).expand(b, f)
            noisy = (1 - s[..., None, None, None]) * clip.detach() + s[..., None, None, None] * torch.randn_like(clip)
            with torch.no_grad():
                real = self.score_x0(self.teacher_net, clip.detach(), noisy, s, actions, scene, pos)
                fake = self.score_x0(self.fake_net, clip.detach(), noisy, s, actions, scene, pos)
            g = slice(self.block, f)
            diff = (fake - real)[:, g]
            norm = (clip.detach()[:, g] - real[:, g]).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
            target = (gen - diff / norm).detach()
            loss_g = 0.5 * (gen - target).square().mean()
            metrics["dmd_loss"] = loss_g.detach()
            metrics["gen_grad_norm"] = self.optimize(loss_g, "generator")

        # fake score: flow matching on the generator's (detached) outputs, clean history = the clip
        sigma = self.sigmas_per_frame(b, f)
        loss_f, _, _ = flow_matching_loss(self.fake_net, clip.detach(), actions, scene, sigma, pos, self.mask,
                                          self.autocast)
        metrics["fake_loss"] = loss_f.detach()
        metrics["fake_grad_norm"] = self.optimize(loss_f, "fake_score")
        return metrics
