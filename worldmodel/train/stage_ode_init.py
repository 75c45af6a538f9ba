"""Stage `ode-init`: initialise the 4-step generator by regressing the teacher's ODE solutions.

For every block of a clip (teacher forcing: clean history, as at inference) the frozen teacher
integrates the flow ODE from noise in `sampler.teacher_steps` Euler steps; the states it passes
at the generator's 4 noise levels become inputs, its end point the target. The generator learns
to jump from any of those levels straight to the teacher's answer (Self Forcing's ODE init).
"""

from __future__ import annotations

import torch

from worldmodel.diffusion.flow_matching import step_sigmas, teacher_sigmas
from worldmodel.model.masks import teacher_forcing
from worldmodel.train.latent_stage import LatentStage, paired_velocity


class OdeInitStage(LatentStage):
    """4-step generator: regression onto the teacher's ODE trajectories"""

    name = "ode-init"
    default_lr = 1e-4

    @classmethod
    def add_arguments(cls, parser):
        super().add_arguments(parser)
        parser.add_argument("--teacher", required=True, help="run or checkpoint directory of the trained teacher")

    def build_models(self) -> None:
        extra = self.options.extra
        self.teacher = self.new_dit(extra["teacher"], ("teacher",)).eval().requires_grad_(False)
        self.teacher_net = self.compiled(self.teacher)  # its 20-step trajectory is most of a step
        self.train_network("generator", self.new_dit(extra.get("init") or extra["teacher"], ("generator", "teacher")))
        self.mask = teacher_forcing(self.clip_frames, self.block, self.device)
        self.student = step_sigmas(self.config.sampler)
        self.student_levels = torch.as_tensor(self.student, device=self.device)  # once: not a copy every step
        self.path = teacher_sigmas(self.config.sampler)
        self.record_at = {}
        for k, s in enumerate(self.student):
            i = min(range(len(self.path)), key=lambda j: abs(self.path[j] - s))
            if abs(self.path[i] - s) > 1e-6:
                raise ValueError(
                    f"the teacher's {len(self.path) - 1} steps do not pass through the generator's level {s:.4f}; "
                    "use sampler.teacher_steps divisible by the number of generator steps"
                )
            self.record_at[i] = k


    @torch.no_grad()
    def teacher_trajectory(self, x0, actions, scene, pos):
        """Per-block teacher ODE solutions with clean history. Returns (states [K, b, F, ...], end)."""
        b, f = x0.shape[:2]
        x = torch.randn_like(x0)
        states = [None] * len(self.student)
        for i, (s, s_next) in enumerate(zip(self.path[:-1], self.path[1:])):
            if i in self.record_at:
                states[self.record_at[i]] = x
            sigma = torch.full((b, f), s, device=x.device)
            v = paired_velocity(self.teacher_net, x0, x, sigma, actions, pos, self.mask, scene, self.autocast)
            x = x + (s_next - s) * v
        return torch.stack(states), x

    def train_step(self, batch, step):
        x0 = self.encode(batch)
        b, f = x0.shape[:2]
        actions = batch["actions"].float()
        scene = self.scenes(batch)
        pos = self.positions(f, 2)
        states, target = self.teacher_trajectory(x0, actions, scene, pos)
        k = torch.randint(0, len(self.student), (b,), device=self.device)
        x_k = states[k, torch.arange(b, device=self.device)]
        s_k = self.student_levels[k][:, None].expand(b, f)
        v = paired_velocity(self.net, x0, x_k, s_k, actions, pos, self.mask, scene, self.autocast)
        pred = x_k - s_k[..., None, None, None] * v
        loss = (pred - target).square().mean()
        grad_norm = self.optimize(loss, "generator")
        return {"loss": loss.detach(), "grad_norm": grad_norm}
