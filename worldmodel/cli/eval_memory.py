"""`magworld eval memory`: how much of a block the MAG memory keeps (decode slots to pixels)."""

from __future__ import annotations

from worldmodel.cli.eval_common import add_model_args, clips, device_of, emit


def register(sub):
    p = sub.add_parser("memory", help="memory-model reconstruction PSNR/SSIM from compressed slots",
                       description="magworld eval memory: write true blocks through the memory model (one slot per "
                       "block), rebuild each block's frames from the compressed memory alone, and compare with "
                       "the truth (and the autoencoder ceiling).")
    add_model_args(p)
    p.add_argument("--cases", type=int, default=32)
    p.add_argument("--blocks", type=int, default=4, help="blocks written per case")
    p.set_defaults(func=run)


def run(args) -> int:
    from worldmodel.bundle import WorldModel
    from worldmodel.eval.prediction import memory_reconstruction

    model = WorldModel.load(args.checkpoint, device_of(args))
    bf = model.config.model.block_frames
    result = memory_reconstruction(model, clips(args, args.blocks * bf, bf), args.cases, args.blocks, args.seed)
    return emit(args, {"checkpoint": str(args.checkpoint), "split": args.split, **result})
