"""What `magworld bench train` shares between its stages: a stage built as `magworld train`
builds it, on one process, and the timer of its steps."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def construct_stage(name: str, argv: list[str], cfg, batch_size: int, device: torch.device, workdir: Path):
    """Stage `name` built as `magworld train NAME ARGV` builds it, on one process of `device`."""
    from worldmodel.train.distributed import DistInfo
    from worldmodel.train.stage import TrainOptions
    from worldmodel.train.stages import load_stage

    cls = load_stage(name)
    parser = argparse.ArgumentParser()
    cls.add_arguments(parser)
    options = TrainOptions(out=workdir / "run", batch_size=batch_size, extra=vars(parser.parse_args(argv)))
    stage = cls(cfg, options, DistInfo(rank=0, world_size=1, local_rank=0, device=device))
    stage.build()
    for opt in stage.optimizers().values():  # as the trainer's learning-rate schedule does
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])
    return stage


def random_checkpoints(cfg, workdir: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """Random-weight checkpoints of `cfg` under workdir/NAME for each of `names` ("autoencoder",
    "teacher", "memory_model"), for a stage to load: a step costs the same whatever the weights."""
    from worldmodel.autoencoder import Autoencoder
    from worldmodel.model import CausalDiT
    from worldmodel.train import checkpoint as ckpt

    dirs = {}
    for name in names:
        module = Autoencoder(cfg.autoencoder) if name == "autoencoder" else CausalDiT(cfg.model)
        d = dirs[name] = workdir / name
        d.mkdir()
        ckpt.save_config(d, cfg)
        ckpt.save_weights(d, name, module.state_dict())
    return dirs


def random_latent_batches(model_cfg, frames: int, batch_size: int, action_scale: torch.Tensor,
                          device: torch.device, bank: int = 4096):
    """f() -> a batch as the latent cache gives one: latents float32 [batch, frames, C, h, w],
    actions [batch, frames, A] in physical units, scene [batch]. A bank of random latents and
    actions sits on the device; each call gathers its clips from it as LatentClips does
    (random rows, float16 -> float32), so the timing is the GPU's, not the loader's."""
    m = model_cfg
    latents = torch.randn(bank, m.latent_channels, m.latent_height, m.latent_width, device=device).half()
    actions = (torch.rand(bank, m.action_dim, device=device) * 2 - 1) * action_scale
    offsets = torch.arange(frames, device=device)

    def batch():
        rows = torch.randint(bank - frames, (batch_size,), device=device)[:, None] + offsets
        return {"latents": latents[rows].float(), "actions": actions[rows],
                "scene": torch.randint(max(m.num_scenes, 1), (batch_size,), device=device)}

    return batch


def timed(step, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per step (mean over `steps`, after `warmup` untimed steps)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / steps


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def gpu_profile(step, steps: int, device: torch.device, top: int = 12) -> dict:
    """`steps` calls of `step` under torch.profiler (CPU and CUDA): wall and kernel seconds per
    step, synchronisations and host-device copies per step, and the `top` kernels by time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
    wall = (time.perf_counter() - t0) / steps
    events = prof.key_averages()

    def device_us(e):
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)

    # what ran on the GPU (kernels, device-side copies and fills); CPU-side ops also carry the
    # device time of the kernels they launched, so they are left out, not added twice
    kernels = [e for e in events if e.device_type == DeviceType.CUDA and device_us(e) > 0]
    kernel_s = sum(device_us(e) for e in kernels) / 1e6 / steps
    count = {e.key: e.count for e in events}
    syncs = sum(n for k, n in count.items() if "Synchronize" in k) / steps
    copies = sum(n for k, n in count.items() if k.startswith("cudaMemcpy")) / steps
    launches = sum(n for k, n in count.items() if k.startswith(("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch"))) / steps
    ranked = sorted(kernels, key=device_us, reverse=True)[:top]
    return {"wall_ms": 1000 * wall, "kernel_ms": 1000 * kernel_s, "gpu_busy": kernel_s / wall,
            "syncs_per_step": syncs, "memcpy_calls_per_step": copies, "launches_per_step": launches,
            "top_kernels_ms": {e.key[:80]: device_us(e) / 1000 / steps for e in ranked}}


def print_profile(prof: dict, label: str) -> None:
    """gpu_profile's figures, a few lines."""
    print(f"  {label}: {prof['wall_ms']:.1f} ms a step, GPU kernels {prof['kernel_ms']:.1f} ms "
          f"({prof['gpu_busy']:.0%} busy); per step {prof['launches_per_step']:,.0f} launches, "
          f"{prof['syncs_per_step']:,.0f} synchronisations, {prof['memcpy_calls_per_step']:,.0f} memcpy calls")
    for name, ms in prof["top_kernels_ms"].items():
        print(f"    {ms:8.2f} ms  {name}")
