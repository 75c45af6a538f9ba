"""`magworld eval history`: the same next block after longer and longer true histories."""

from __future__ import annotations

import sys

from worldmodel.cli.eval_common import add_model_args, clips, device_of, emit


def register(sub):
    p = sub.add_parser("history", help="next-block PSNR of one target block after N true history blocks, per memory "
                       "strategy (does a long memory help or hurt?)",
                       description="magworld eval history: for each case, predict the same target block after the "
                       "last N true blocks before it, for every N in --lengths and every strategy in --strategies; "
                       "PSNR against the truth beside copy-last and the autoencoder ceiling on the same frames.")
    add_model_args(p)
    p.add_argument("--cases", type=int, default=16)
    p.add_argument("--lengths", default="1,3,8,16,30", help="history lengths in blocks, comma-separated")
    p.add_argument("--strategies", default="window,mag", help="comma-separated rows as in `eval revisit`: none, window, "
                   "full, 'mag w/o stage 1' (the generator's own last-frame K/V as slots), mag, 'mag (recent only)', "
                   "'mag (all slots)', memorypack")
    p.set_defaults(func=run)


def run(args) -> int:
    from worldmodel.bundle import WorldModel
    from worldmodel.eval.history_length import history_length, table

    try:
        lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--lengths must be whole numbers separated by commas, got {args.lengths!r}") from None
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    model = WorldModel.load(args.checkpoint, device_of(args))
    bf, a = model.config.model.block_frames, model.config.autoencoder
    data = clips(args, (max(lengths) + 1) * bf, bf, (a.frame_height, a.frame_width))
    result = history_length(model, data, args.cases, lengths, strategies, args.seed)
    print(table(result), file=sys.stderr)
    return emit(args, {"checkpoint": str(args.checkpoint), "split": args.split, **result})
