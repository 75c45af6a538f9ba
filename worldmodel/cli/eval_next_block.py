"""`magworld eval next-block`: predict the next block from true history and actions."""

from __future__ import annotations

from worldmodel.cli.eval_common import (add_model_args, add_predictor_args, clips, emit, load_predictors,
                                        predictor_source)


def register(sub):
    p = sub.add_parser("next-block", help="next-block PSNR/SSIM/sharpness given true history, with counterfactual "
                       "actions, vs copy-last", description="magworld eval next-block: observe true blocks, predict "
                       "the next one from its actions, and again with the turns mirrored and with another case's "
                       "actions; PSNR/SSIM against the truth, PSNR(true) - PSNR(counterfactual), the PSNR between "
                       "the true and counterfactual generations (>= 50 dB: the action changes nothing), and "
                       "sharpness beside the truth's, next to the copy-last-frame baseline and the autoencoder "
                       "ceiling. A teacher run alone: --teacher RUN --autoencoder AE_DIR (no --checkpoint).")
    add_model_args(p, checkpoint_required=False)
    add_predictor_args(p)
    p.add_argument("--cases", type=int, default=64)
    p.add_argument("--context-blocks", type=int, default=3)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from worldmodel.eval.prediction import next_block

    model, predictors = load_predictors(args)
    bf, a = model.config.model.block_frames, model.config.autoencoder
    data = clips(args, (args.context_blocks + 1) * bf, bf, (a.frame_height, a.frame_width))
    with torch.no_grad():
        result = next_block(model, data, args.cases, args.context_blocks, predictors, args.seed)
    source = predictor_source(args)
    return emit(args, {**source, "split": args.split, **result})
