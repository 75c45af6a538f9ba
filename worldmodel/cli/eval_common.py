"""Shared bits of the eval actions: device choice, loading, clips, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_model_args(p, data=True, checkpoint_required=True):
    p.add_argument("--checkpoint", required=checkpoint_required, type=Path, default=None,
                   help="checkpoint directory (e.g. checkpoints/doom-gpu)")
    if data:
        p.add_argument("--data", required=True, help="dataset directory (or 'synthetic' for a smoke test)")
        p.add_argument("--split", default="heldout", help="dataset split (default: heldout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")


def add_predictor_args(p):
    """The predictors an action-conditioned eval compares: the checkpoint's few-step generator and/or
    a teacher run with its multi-step Euler sampler (a teacher alone needs --autoencoder)."""
    p.add_argument("--teacher", type=Path, default=None,
                   help="teacher run/checkpoint to evaluate with its multi-step Euler sampler; without --checkpoint "
                   "it is evaluated alone (then --autoencoder is needed)")
    p.add_argument("--autoencoder", type=Path, default=None,
                   help="run/checkpoint directory of the autoencoder (default: the --checkpoint's)")
    p.add_argument("--teacher-steps", type=int, default=None,
                   help="Euler steps of the teacher's sampler (default: its config's sampler.teacher_steps)")
    p.add_argument("--strategy", default="full", help="memory strategy of the generator (default full; the teacher "
                   "always attends to the full history, as it was trained)")
    p.add_argument("--action-guidance", type=float, default=None, metavar="W",
                   help="sample every predictor with action guidance W: v(still) + W (v(actions) - v(still)); "
                   "1 = off (default: each config's sampler.action_guidance)")


def load_predictors(args):
    """(WorldModel for encoding, decoding and sizes, {row name: Rollout}) from --checkpoint/--teacher.

    Without --checkpoint the WorldModel is the teacher with the --autoencoder: a teacher run can be
    evaluated before any generator exists."""
    from worldmodel.autoencoder import load_autoencoder
    from worldmodel.bundle import WorldModel
    from worldmodel.model import CausalDiT
    from worldmodel.rollout import Rollout
    from worldmodel.train import checkpoint as ckpt

    if args.checkpoint is None and args.teacher is None:
        raise ValueError("give --checkpoint CKPT, or --teacher RUN --autoencoder AE_DIR to evaluate a teacher alone")
    if args.checkpoint is None and args.autoencoder is None:
        raise ValueError("a teacher alone has no autoencoder: add --autoencoder AE_DIR (an autoencoder run or a "
                         "checkpoint with autoencoder.safetensors, e.g. checkpoints/doom-gpu)")
    device = device_of(args)
    model = WorldModel.load(args.checkpoint, device) if args.checkpoint is not None else None
    if args.autoencoder is not None:
        ae = load_autoencoder(args.autoencoder, device)
        if model is not None:
            model.autoencoder, model.config.autoencoder = ae, ae.config
    else:
        ae = model.autoencoder
    predictors = {}
    if model is not None:
        _check_latents(model.config.model, ae.config, args.checkpoint)
        steps = len(model.config.sampler.timesteps)  # 4 for every shipped bundle
        predictors[f"generator ({steps} steps)"] = _guided(model.rollout(args.strategy), args)
    if args.teacher is not None:
        tdir = ckpt.resolve_checkpoint(args.teacher)
        tcfg = ckpt.load_config(tdir)  # the teacher's own sizes: it may be a different model from the generator
        _check_latents(tcfg.model, ae.config, args.teacher)
        teacher = ckpt.load_module(CausalDiT(tcfg.model), tdir, "teacher").to(device).eval()
        if model is not None and tcfg.model.block_frames != model.config.model.block_frames:
            raise ValueError(f"the teacher makes blocks of {tcfg.model.block_frames} frames, the checkpoint of "
                             f"{model.config.model.block_frames}: evaluate them in separate runs")
        tcfg.autoencoder = ae.config
        steps = args.teacher_steps or tcfg.sampler.teacher_steps
        if steps < 1:
            raise ValueError(f"--teacher-steps must be at least 1, got {steps}")
        memory = tcfg.memory.__class__(**{**tcfg.memory.__dict__, "strategy": "full"})
        if model is None:
            model = WorldModel(tcfg, ae, teacher).eval()
        predictors[f"teacher ({steps} steps)"] = _guided(Rollout(teacher, tcfg.sampler, memory, euler_steps=steps), args)
    return model, predictors


def _guided(rollout, args):
    from worldmodel.config import check_action_guidance

    w = getattr(args, "action_guidance", None)
    if w is not None:
        rollout.action_guidance = check_action_guidance(w, "--action-guidance")
    return rollout


def predictor_source(args) -> dict:
    """Which runs were evaluated, for the JSON output."""
    return {k: None if getattr(args, k) is None else str(getattr(args, k)) for k in ("checkpoint", "teacher")}


def _check_latents(model_cfg, ae_cfg, where) -> None:
    want = (model_cfg.latent_channels, model_cfg.latent_height, model_cfg.latent_width)
    have = (ae_cfg.latent_channels, ae_cfg.latent_height, ae_cfg.latent_width)
    if want != have:
        raise ValueError(f"{where} models latents {'x'.join(map(str, want))} but the autoencoder makes "
                         f"{'x'.join(map(str, have))}: pass the --autoencoder it was trained with")


def device_of(args):
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def clips(args, clip_frames: int, block_frames: int, frame_size: tuple[int, int] | None = None):
    """Clips of the --data dataset's --split; `--data synthetic` (smoke tests) makes moving
    rectangles of frame_size (height, width) instead."""
    if args.data == "synthetic":
        from worldmodel.train.synthetic import SyntheticClips

        return SyntheticClips(clip_frames, *frame_size, seed=args.seed)
    from worldmodel.data.dataset import ClipDataset

    if not Path(args.data).is_dir():
        raise ValueError(f"--data {args.data} is not a dataset directory: record held-out episodes with "
                         "`magworld data record --maps WAD:MAP ... --out DIR` (see docs/dataset.md)")
    return ClipDataset(args.data, clip_frames, block_frames=block_frames, split=args.split, seed=args.seed)


def emit(args, result: dict) -> int:
    from worldmodel.machine import describe

    result = {**result, "machine": describe(device_of(args))}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    sys.stdout.flush()
    return 0
