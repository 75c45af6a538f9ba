"""`magworld eval rollout`: a long scripted rollout beside the real engine (drift, strip, video)."""

from __future__ import annotations

from pathlib import Path

from worldmodel.cli.eval_common import add_model_args, device_of, emit

SCRIPTS = ("tour", "still")  # worldmodel.eval.long_rollout.SCRIPTS (not imported: the CLI starts without torch)


def register(sub):
    p = sub.add_parser("rollout", help="long scripted rollout vs the engine: drift, frame strip, mp4",
                       description="magworld eval rollout: run the real ViZDoom engine and the world model on the "
                       "same scripted actions; report PSNR over time and drift, sharpness over the engine's, and "
                       "PSNR(true) - PSNR(counterfactual) for the same rollout with the turns mirrored and with its "
                       "blocks shuffled; save a strip of frames every "
                       "10 s (generated over true) and a side-by-side mp4.")
    add_model_args(p, data=False)
    p.add_argument("--map", default="freedoom2.wad:MAP07", help="WAD:MAP to roll out in (default: a held-out map)")
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--script", choices=SCRIPTS, default="tour",
                   help="tour: walk, turn, pan away and back, strafe (default); still: no key pressed (is the "
                   "room still there after --seconds? compare psnr_vs_engine first and last minute)")
    p.add_argument("--strategy", default=None, help="memory strategy (default: the checkpoint's)")
    p.add_argument("--counterfactuals", default="mirrored turns,shuffled",
                   help="comma-separated rollouts with wrong actions to compare: 'mirrored turns', 'shuffled' "
                   "(the script's blocks permuted); '' for none (each costs one more rollout)")
    p.add_argument("--out", type=Path, default=Path("docs/media"), help="folder for the strip, video and PSNR curve")
    p.set_defaults(func=run)


def run(args) -> int:
    from worldmodel.bundle import WorldModel
    from worldmodel.eval.engine_view import engine_settings
    from worldmodel.eval.long_rollout import long_rollout

    model = WorldModel.load(args.checkpoint, device_of(args))
    wad, _, map_name = args.map.partition(":")
    a = model.config.autoencoder
    settings = engine_settings(wad, map_name, a.frame_height, a.frame_width)
    kinds = tuple(k.strip() for k in args.counterfactuals.split(",") if k.strip())
    result = long_rollout(model, settings, args.seconds, args.out, args.strategy, seed=args.seed, counterfactuals=kinds,
                          script=args.script)
    return emit(args, {"checkpoint": str(args.checkpoint), **result})
