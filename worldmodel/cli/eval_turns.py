"""`magworld eval turns`: from one real context, turn left vs right vs stand still, beside the engine."""

from __future__ import annotations

import json
from pathlib import Path

from worldmodel.cli.eval_common import (add_model_args, add_predictor_args, emit, load_predictors,
                                        predictor_source)


def register(sub):
    p = sub.add_parser("turns", help="turn test: left vs right vs still from one real context, beside the engine "
                       "(frame strip + JSON)", description="magworld eval turns: on held-out maps the engine makes "
                       "each case (no dataset needed): a real context, then a turn left, a turn right and standing "
                       "still. The model generates each from the same context and noise; PSNR per frame against "
                       "the engine, true - mirrored turns, the PSNR between the model's left and right (>= 50 dB: "
                       "the keys change nothing), sharpness. Writes turns_strip.png and turns.json to --out. "
                       "A teacher run alone: --teacher RUN --autoencoder AE_DIR (no --checkpoint).")
    add_model_args(p, data=False, checkpoint_required=False)
    add_predictor_args(p)
    p.add_argument("--cases", type=int, default=8, help="cases, taken in turn from the maps (default 8)")
    p.add_argument("--maps", nargs="+", default=None, metavar="WAD:MAP", help="default: the held-out maps")
    p.add_argument("--context-blocks", type=int, default=3)
    p.add_argument("--turn-frames", type=int, default=9, help="frames of each turn, a whole number of blocks (default 9)")
    p.add_argument("--turn-deg", type=float, default=11.25, help="degrees turned per frame (default 11.25)")
    p.add_argument("--strip-cases", type=int, default=1, help="cases shown in the PNG (default 1)")
    p.add_argument("--out", type=Path, default=Path("docs/media"), help="folder for turns_strip.png and turns.json")
    p.set_defaults(func=run)


def run(args) -> int:
    from worldmodel.eval.turns import make_turn_cases, save_strip, turn_eval

    if args.cases < 1:
        raise ValueError(f"--cases must be at least 1, got {args.cases}")
    model, predictors = load_predictors(args)
    bf, a = model.config.model.block_frames, model.config.autoencoder
    cases = make_turn_cases(args.cases, bf, args.context_blocks, args.turn_frames, args.turn_deg,
                            a.frame_height, a.frame_width, args.maps, seed=args.seed)
    result = turn_eval(model, predictors, cases, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    strip, detail = args.out / "turns_strip.png", args.out / "turns.json"
    save_strip(cases, result["generated"], strip, args.strip_cases)
    source = predictor_source(args)
    setup = {"cases": len(cases), "maps": sorted({c.map for c in cases}), "context_blocks": args.context_blocks,
             "turn_frames": args.turn_frames, "turn_deg_per_frame": float(cases[0].actions["left"][0, 0])}
    detail.write_text(json.dumps({**source, **setup, "summary": result["summary"], "per_case": result["per_case"]})
                      + "\n")
    return emit(args, {**source, **setup, "summary": result["summary"], "strip": str(strip), "details": str(detail)})
