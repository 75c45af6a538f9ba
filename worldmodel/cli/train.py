"""`magworld train <stage>`: run a registered training stage (see worldmodel/train/stages.py).

Several GPUs: `torchrun --nproc_per_node N -m worldmodel.cli train <stage> ...` (global --batch-size
is split over the processes; `--parallel` picks DDP or FSDP for the trained transformer).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from worldmodel.train.distributed import FSDP_AUTO_MIN_PARAMS, PARALLEL_MODES
from worldmodel.train.stages import available_stages, load_stage

DEFAULT_PRESET = "doom-gpu"
SYNTHETIC = "synthetic"


def register(sub):
    parser = sub.add_parser(
        "train",
        help="train a stage (autoencoder, ...), resumable, time-limited",
        description="magworld train: run one training stage; checkpoints go to --out, --resume continues exactly.",
    )
    stages = parser.add_subparsers(dest="train_command", metavar="STAGE")
    stages.required = True
    for name in available_stages():
        cls = load_stage(name)
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or name).strip().splitlines()[0]
        p = stages.add_parser(name, help=doc, description=f"magworld train {name}: {doc}")
        _add_common(p)
        before = {a.dest for a in p._actions}
        group = p.add_argument_group(f"{name} options")
        cls.add_arguments(group)
        p.set_defaults(func=run, stage_name=name, stage_args=sorted({a.dest for a in p._actions} - before))
    from worldmodel.train.package import register_package

    register_package(stages)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help=f"dataset directory (or '{SYNTHETIC}' for a generated smoke-test set)")
    p.add_argument("--out", required=True, type=Path, help="run directory: checkpoint/, metrics.csv")
    p.add_argument("--split", default="train", help="dataset split to train on (default: train)")
    p.add_argument("--preset", default=None,
                   help=f"config preset (default: the checkpoint's config with --resume, else {DEFAULT_PRESET})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set autoencoder.base_channels=32 (repeatable)")
    p.add_argument("--max-steps", type=int, default=1000, help="total steps of the run, counting resumed ones")
    p.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                   help="stop (checkpoint written) before this many minutes after the command started")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    p.add_argument("--batch-size", type=int, default=None, help="global batch in clips (default: the stage's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the stage's)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 disables")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--log-every", type=int, default=10, help="steps between metric rows")
    p.add_argument("--checkpoint-every", type=float, default=5.0, metavar="MIN", help="minutes between checkpoints")
    p.add_argument("--checkpoint-every-steps", type=int, default=0, help="also checkpoint every N steps (0: off)")
    p.add_argument("--no-autocast", action="store_true", help="train in float32 on CUDA (default: bf16 autocast)")
    p.add_argument("--parallel", choices=PARALLEL_MODES, default="auto",
                   help="under torchrun: ddp replicates the trained transformer, fsdp shards it (weights, gradients, "
                        "optimizer and EMA; bf16 compute on CUDA); auto: fsdp from "
                        f"{FSDP_AUTO_MIN_PARAMS // 10**6}M parameters (wan-1.3b), else ddp. "
                        "The autoencoder stage always uses ddp")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--val-data", default=None, metavar="DIR",
                   help="a held-out dataset (e.g. the held-out maps): every --val-every steps the stage's loss on "
                        "a fixed set of its clips is logged as val_loss (teacher; see worldmodel/train/validation.py)")
    p.add_argument("--val-split", default="heldout", help="split of --val-data to score (default: heldout)")
    p.add_argument("--val-every", type=int, default=500, help="steps between validations (default 500)")
    p.add_argument("--val-clips", type=int, default=256, help="held-out clips scored each time (default 256)")


def resolve_config(args):
    """The run's WorldModelConfig: a preset, or the checkpoint's config on resume, plus --set overrides."""
    from worldmodel.config import apply_overrides, preset
    from worldmodel.train import checkpoint as ckpt

    base = None
    if args.resume and args.preset is None:
        try:
            base = ckpt.load_config(ckpt.resolve_checkpoint(Path(args.out) / "checkpoint"))
        except ckpt.CheckpointError:
            base = None
    if base is None:
        base = preset(args.preset or DEFAULT_PRESET)
    return apply_overrides(base, args.overrides)


def latent_cache_of(args, info) -> str | None:
    """The autoencoder whose latent cache a latent stage trains from, or None (frames, encoded per batch)."""
    choice = getattr(args, "latent_cache", None)
    if choice is None or choice == "off" or args.data == SYNTHETIC:
        return None
    if choice == "auto" and info.device.type != "cuda":
        return None
    return args.autoencoder


def frames_on_device_of(args, info, config) -> bool:
    """Whether the autoencoder stage holds the split's frames on the device (FrameClips)."""
    choice = getattr(args, "frames_on_device", None)
    if choice is None or choice == "off" or args.data == SYNTHETIC:
        return False
    if choice == "on":
        return True
    if info.device.type != "cuda":
        return False
    import torch

    from worldmodel.data.frame_clips import frames_bytes

    need = frames_bytes(args.data, args.split, config.model.block_frames)
    free, _ = torch.cuda.mem_get_info(info.device)
    if need > free / 2:
        if info.is_main:
            print(f"magworld train: the frames take {need / 2**30:.1f} GiB, over half of the GPU's free "
                  f"{free / 2**30:.1f} GiB: batches are read from the shards (--frames-on-device on forces it)")
        return False
    if info.is_main:
        print(f"magworld train: the frames ({need / 2**30:.1f} GiB) are held on the GPU; each batch is gathered there")
    return True


def dataset_factory(data: str, split: str, config, info, latent_autoencoder: str | None = None,
                    frames_on_device: bool = False):
    """make_dataset(clip_frames, seed) for this process's rank; with `latent_autoencoder`, clips of
    the dataset's latent cache for that autoencoder (built first, by rank 0, if missing or stale);
    with `frames_on_device`, clips of the frames held in device memory (FrameClips)."""
    if data == SYNTHETIC:
        from worldmodel.train.synthetic import SyntheticClips

        a = config.autoencoder
        return lambda clip_frames, seed: SyntheticClips(
            clip_frames, a.frame_height, a.frame_width, num_clips=256, seed=seed, rank=info.rank,
            world_size=info.world_size, num_scenes=max(config.model.num_scenes, 1),
        )
    if not Path(data).is_dir():
        raise SystemExit(f"magworld train: --data {data} is not a directory (record one with `magworld data`)")
    if latent_autoencoder is not None:
        from worldmodel.data import latent_cache
        from worldmodel.data.latent_clips import LatentClips
        from worldmodel.train.distributed import barrier

        if info.is_main:
            latent_cache.build(data, latent_autoencoder, info.device)
        barrier()
        return lambda clip_frames, seed: LatentClips(
            data, latent_autoencoder, clip_frames, block_frames=config.model.block_frames, split=split,
            rank=info.rank, world_size=info.world_size, seed=seed, device=info.device,
        )
    if frames_on_device:
        from worldmodel.data.frame_clips import FrameClips

        return lambda clip_frames, seed: FrameClips(
            data, clip_frames, block_frames=config.model.block_frames, split=split, rank=info.rank,
            world_size=info.world_size, seed=seed, device=info.device,
        )
    from worldmodel.data.dataset import ClipDataset

    return lambda clip_frames, seed: ClipDataset(
        data, clip_frames, block_frames=config.model.block_frames, split=split, rank=info.rank,
        world_size=info.world_size, seed=seed,
    )


def run(args) -> int:
    start = time.monotonic()
    from worldmodel.train.distributed import init_distributed, shutdown
    from worldmodel.train.stage import TrainOptions
    from worldmodel.train.trainer import Trainer

    config = resolve_config(args)
    info = init_distributed(args.device)
    try:
        options = TrainOptions(
            out=args.out, max_steps=args.max_steps, time_limit_min=args.time_limit, batch_size=args.batch_size,
            lr=args.lr, weight_decay=args.weight_decay, grad_clip=args.grad_clip, ema_decay=args.ema_decay,
            warmup_steps=args.warmup_steps, seed=args.seed, resume=args.resume, log_every=args.log_every,
            checkpoint_every_steps=args.checkpoint_every_steps, checkpoint_every_min=args.checkpoint_every,
            autocast=not args.no_autocast, parallel=args.parallel, val_every=args.val_every, val_clips=args.val_clips,
            extra={k: getattr(args, k) for k in args.stage_args},
        )
        if info.device.type == "cuda":
            import torch

            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 parts (norms, losses) on tensor cores
            torch.backends.cudnn.allow_tf32 = True
        stage = load_stage(args.stage_name)(config, options, info)
        make_dataset = dataset_factory(args.data, args.split, config, info, latent_cache_of(args, info),
                                       frames_on_device_of(args, info, config))
        make_val_dataset = None
        if args.val_data:
            make_val_dataset = dataset_factory(args.val_data, args.val_split, config, info, latent_cache_of(args, info))
        Trainer(stage, make_dataset, options, info, start_time=start, progress=not args.no_progress,
                make_val_dataset=make_val_dataset).run()
        if info.is_main:
            from worldmodel.machine import describe

            (Path(args.out) / "machine.txt").write_text(describe(str(info.device)) + "\n")
    finally:
        shutdown()
    return 0
