"""`magworld bench train --stage dmd|generator`: where a Self Forcing step's time goes.

The two stages that distil the 4-step generator (`dmd`: Self Forcing + DMD; `generator`: MAG
stage 2, the same with the frozen memory model writing the cache and `--history-blocks` of
compressed history) are built exactly as `magworld train` builds them, from random weights (the
teacher, the memory model and the autoencoder are written as random-weight checkpoints: a step
costs the same whatever the weights), and fed batches gathered from a bank of random latents on
the device, as the latent cache feeds them.

The figures, each printed (and written to --json) as soon as it is measured:
  - steps/s over `--steps` timed steps (nothing synchronised in between), and generator updates/s
    (one step in `--critic-steps` moves the generator; the others only the fake score);
  - the phases of a step, each timed with the device synchronised around it over one cycle of
    `--critic-steps` steps: the history's slot table (stage `generator`), the rollout (that of
    a generator update, with gradient through each block's exit step, apart from those of the
    critic-only steps, which need none), the two score models, the fake score's flow
    matching step, the optimizer steps (backward included). Synchronising adds a little to
    each phase, so these add up to slightly more than the unsynchronised step.
  - with `--count-operators`: the operators one step issues (torch.profiler's count of aten
    calls, nested ones included), which bound a step's time when kernels are too small to fill
    the GPU;
  - with `--profile` (CUDA): one cycle under torch.profiler, the GPU's kernel time against the
    wall time of the same steps (how busy the GPU is), host-device synchronisations, and the
    kernels that take the most time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from worldmodel.bench_stage import (construct_stage, gpu_profile, peak_gb, print_profile, random_checkpoints,
                                    random_latent_batches, timed)
from worldmodel.config import apply_overrides, preset
from worldmodel.machine import describe

STAGES = ("dmd", "generator")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--critic-steps", type=int, default=3,
                   help="stages dmd/generator: fake-score updates per generator update (default 3)")
    p.add_argument("--profile", action="store_true",
                   help="CUDA: also profile a few steps (dmd/generator: one cycle): how busy the GPU is, "
                        "synchronisations, the top kernels")
    p.add_argument("--count-operators", action="store_true",
                   help="stages dmd/generator: also count the aten calls of a step (torch.profiler on the CPU side; "
                        "slow on CUDA, where --profile says more)")
    p.add_argument("--history-blocks", type=int, default=0, metavar="H",
                   help="stage generator: blocks of compressed history before each clip (default 0; "
                        "scripts/gpu/stage2.sh trains with capacity - clip blocks)")


def build_stage(args, cfg, device: torch.device, workdir: Path):
    dirs = random_checkpoints(cfg, workdir, ("autoencoder", "teacher", "memory_model"))
    argv = ["--autoencoder", str(dirs["autoencoder"]), "--teacher", str(dirs["teacher"]),
            "--clip-blocks", str(args.clip_blocks), "--compile", args.compile,
            "--critic-steps", str(args.critic_steps)]
    if args.stage == "generator":
        argv += ["--memory-model", str(dirs["memory_model"]), "--history-blocks", str(args.history_blocks)]
    elif args.history_blocks:
        raise ValueError("--history-blocks is stage generator's (MAG stage 2)")
    return construct_stage(args.stage, argv, cfg, args.batch_size, device, workdir)


class PhaseClock:
    """Seconds per named phase: wraps bound methods of an object (and module functions) so that
    each call is timed with the device synchronised before and after."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self._undo: list = []

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, owner, attr: str, name=None):
        """Time every call of owner.attr under `name` (a string, or f(args, kwargs) -> string)."""
        original = getattr(owner, attr)
        had_own = attr in vars(owner)

        def timed_call(*a, **kw):
            label = name(a, kw) if callable(name) else (name or attr)
            self._sync()
            t0 = time.perf_counter()
            out = original(*a, **kw)
            self._sync()
            self.seconds[label] += time.perf_counter() - t0
            return out

        setattr(owner, attr, timed_call)
        self._undo.append((owner, attr, original if had_own else None))

    def restore(self):
        for owner, attr, original in reversed(self._undo):
            if original is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)
        self._undo.clear()


def phase_breakdown(stage, step, cycles: int, device: torch.device) -> dict[str, float]:
    """Seconds per step of each phase, over `cycles` cycles of `critic_steps` steps."""
    import worldmodel.train.stage_dmd as stage_dmd

    clock = PhaseClock(device)
    clock.wrap(stage, "history_table", "history slot table")
    # a generator update's rollout keeps the graph of each block's exit step; a critic step's none
    clock.wrap(stage, "rollout", lambda a, kw: "rollout of a generator update" if kw.get("grad")
               else "rollout of a critic step")
    clock.wrap(stage, "score_x0", lambda a, kw: "score: teacher" if a[0] is stage.teacher_net else "score: fake")
    clock.wrap(stage_dmd, "flow_matching_loss", "fake score: flow-matching forward")
    clock.wrap(stage, "optimize", lambda a, kw: f"backward + step: {a[1]}")
    steps = cycles * stage.critic_steps
    try:
        for _ in range(steps):
            step()
    finally:
        clock.restore()
    return {k: v / steps for k, v in clock.seconds.items()}


def count_operators(step) -> int:
    """aten operators one call of `step` issues (torch.profiler, CPU side)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    cfg = apply_overrides(preset(args.preset), args.set)
    m = cfg.model
    if args.critic_steps < 1:
        raise ValueError("--critic-steps must be at least 1")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    result = {"machine": describe(str(device)), "stage": args.stage, "preset": args.preset,
              "dim x layers": f"{m.dim} x {m.layers} (heads {m.heads}, ffn {m.ffn_dim})", "compile": args.compile}

    def report(**figures):
        """Each figure printed and saved as soon as it is measured: a run stopped by a time limit
        keeps what it measured."""
        result.update(figures)
        _print(result, list(figures))
        if args.json:
            import json

            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        stage = build_stage(args, cfg, device, Path(tmp))
        # clips of history + clip frames
        batch = random_latent_batches(m, stage.clip_frames, args.batch_size, stage.generator.action_scale, device)
        step_index = [0]

        def step():
            stage.train_step(batch(), step_index[0])
            step_index[0] += 1

        report(batch=f"{args.batch_size} clips x {stage.clip_blocks} blocks"
               + (f" after {stage.history_blocks} blocks of history" if stage.history_blocks else ""),
               critic_steps=stage.critic_steps, params_M=sum(p.numel() for p in stage.generator.parameters()) / 1e6)
        # whole cycles, so that the mean holds the generator's share of updates
        warmup = -(-args.warmup // stage.critic_steps) * stage.critic_steps
        steps = max(1, args.steps // stage.critic_steps) * stage.critic_steps
        seconds = timed(step, warmup, steps, device)
        report(steps_per_s=1 / seconds, generator_updates_per_s=1 / seconds / stage.critic_steps,
               peak_gb=peak_gb(device))
        report(phase_seconds_per_step=phase_breakdown(stage, step, 1, device))
        if args.profile and device.type == "cuda":
            step_index[0] = 0
            report(profile=gpu_profile(step, stage.critic_steps, device))
        if args.count_operators:
            step_index[0] = 0  # a generator update (step 0 of a cycle) and a critic-only step
            report(operators_per_step={"generator update": count_operators(step),
                                       "fake score only": count_operators(step)})
        del stage
    return 0


def _print(r: dict, new: list[str]) -> None:
    """Print the figures `new` of result `r` (keys as `run` reports them)."""
    if "batch" in new:
        print(f"bench train: {r['stage']} at {r['preset']}, {r['dim x layers']}, {r['params_M']:.2f}M parameters")
        print(f"  batch: {r['batch']}; critic steps {r['critic_steps']}; compile {r['compile']}")
        print(f"  machine: {r['machine']}")
    if "steps_per_s" in new:
        peak = f", peak {r['peak_gb']:.1f} GB" if r["peak_gb"] is not None else ""
        print(f"  {r['steps_per_s']:.2f} steps/s, {r['generator_updates_per_s']:.2f} generator updates/s{peak}")
    if "phase_seconds_per_step" in new:
        phases = r["phase_seconds_per_step"]
        total = sum(phases.values())
        print(f"  {'phase (synchronised, per step)':<40} {'ms':>8} {'share':>6}")
        for name, s in sorted(phases.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<40} {1000 * s:>8.1f} {s / total:>6.0%}")
    if "profile" in new:
        print_profile(r["profile"], "profiled cycle")
    if "operators_per_step" in new:
        print("  aten calls a step (nested ones included): "
              + ", ".join(f"{k} {v:,}" for k, v in r["operators_per_step"].items()))
    sys.stdout.flush()
