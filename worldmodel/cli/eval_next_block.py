"""`magworld eval next-block`: predict the next block from true history and actions."""

from __future__ import annotations

from pathlib import Path

from worldmodel.cli.eval_common import add_model_args, clips, device_of, emit


def register(sub):
    p = sub.add_parser("next-block", help="next-block PSNR/SSIM given true history, vs copy-last and teacher",
                       description="magworld eval next-block: observe true blocks, predict the next one from its "
                       "actions; PSNR/SSIM against the truth, beside the copy-last-frame baseline and the "
                       "autoencoder ceiling (and the multi-step teacher with --teacher).")
    add_model_args(p)
    p.add_argument("--cases", type=int, default=64)
    p.add_argument("--context-blocks", type=int, default=3)
    p.add_argument("--teacher", type=Path, default=None, help="teacher run/checkpoint to compare (multi-step sampler)")
    p.add_argument("--strategy", default="full", help="memory strategy while predicting (default full)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from worldmodel.bundle import WorldModel
    from worldmodel.eval.prediction import next_block
    from worldmodel.model import CausalDiT
    from worldmodel.rollout import Rollout
    from worldmodel.train import checkpoint as ckpt

    model = WorldModel.load(args.checkpoint, device_of(args))
    bf = model.config.model.block_frames
    predictors = {"generator (4 steps)": model.rollout(args.strategy)}
    if args.teacher:
        tdir = ckpt.resolve_checkpoint(args.teacher)
        teacher = ckpt.load_module(CausalDiT(model.config.model), tdir, "teacher").to(model.device).eval()
        memory = model.config.memory.__class__(**{**model.config.memory.__dict__, "strategy": "full"})
        steps = model.config.sampler.teacher_steps
        predictors[f"teacher ({steps} steps)"] = Rollout(teacher, model.config.sampler, memory, euler_steps=steps)
    with torch.no_grad():
        result = next_block(model, clips(args, (args.context_blocks + 1) * bf, bf), args.cases,
                            args.context_blocks, predictors, args.seed)
    return emit(args, {"checkpoint": str(args.checkpoint), "split": args.split, **result})
