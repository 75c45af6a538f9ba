"""`magworld data record | check | encode | revisit-bench`: make, validate, encode and benchmark datasets."""

from __future__ import annotations

import sys


def register(sub):
    parser = sub.add_parser(
        "data", help="record ViZDoom datasets, check them, build the revisit benchmark",
        description="Datasets: record from ViZDoom, validate a directory, build the held-out revisit benchmark. "
        "The format is specified in docs/dataset.md.")
    inner = parser.add_subparsers(dest="data_command", metavar="ACTION")
    inner.required = True
    _register_record(inner)
    _register_check(inner)
    _register_encode(inner)
    _register_revisit(inner)


def _register_record(inner):
    from worldmodel.data.policies import POLICIES

    p = inner.add_parser(
        "record", help="drive ViZDoom with an exploration policy and write a dataset",
        description="Record RGB frames, per-frame actions and poses from headless ViZDoom (no monsters, no HUD, "
        "freelook on) in several worker processes, as sharded files (docs/dataset.md). The same options and "
        "--seed reproduce a dataset exactly.")
    p.add_argument("--policy", choices=POLICIES, default="mix",
                   help="wander: smooth random walking; look-around: pan away and back; out-and-back: walk away "
                   "and retrace; mix: a weighted mix of the three (default)")
    p.add_argument("--mix", default=None, metavar="W",
                   help="weights for --policy mix, e.g. wander=2,look-around=1,out-and-back=1")
    p.add_argument("--frames", type=int, required=True, help="frames to record in total")
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--maps", nargs="+", default=None, metavar="WAD:MAP",
                   help="maps to record on, e.g. freedoom2.wad:MAP01 (default: the train split of "
                   "worldmodel/data/splits.json)")
    p.add_argument("--workers", type=int, default=2, help="worker processes, one engine each (default 2)")
    p.add_argument("--resolution", default="160x120", help="frame size WxH that ViZDoom renders (default 160x120)")
    p.add_argument("--frame-skip", type=int, default=2, help="engine tics per frame (default 2: 17.5 frames/s)")
    p.add_argument("--seed", type=int, default=0, help="base seed; worker k uses (seed, k)")
    p.add_argument("--episode-frames", type=int, default=600, help="frames per episode at most (default 600)")
    p.add_argument("--shard-frames", type=int, default=1200, help="frames per shard, about (default 1200)")
    p.add_argument("--hud", action="store_true", help="render the status bar (off by default)")
    p.add_argument("--weapon", action="store_true", help="render the weapon (off by default)")
    p.add_argument("--crosshair", action="store_true", help="render the crosshair (off by default)")
    p.set_defaults(func=_record)


def _record(args) -> int:
    from worldmodel.data.engine import parse_resolution
    from worldmodel.data.policies import Policy, parse_weights
    from worldmodel.data.recorder import RecordConfig, record
    from worldmodel.data.splits import heldout_maps, parse_map, train_maps

    try:
        width, height = parse_resolution(args.resolution)
        weights = parse_weights(args.mix)
        Policy(args.policy, args.frame_skip, weights)
        maps = args.maps or train_maps()
        for m in maps:
            parse_map(m)
        if args.frames < 1 or args.workers < 1 or args.frame_skip < 1:
            raise ValueError("--frames, --workers and --frame-skip must be at least 1")
    except ValueError as e:
        print(f"magworld data record: {e}", file=sys.stderr)
        return 2
    if args.maps and set(maps) & set(heldout_maps()):
        print(f"note: recording on held-out maps {sorted(set(maps) & set(heldout_maps()))}; "
              "their episodes are marked split=heldout", file=sys.stderr)
    cfg = RecordConfig(out=args.out, policy=args.policy, frames=args.frames, maps=maps, workers=args.workers,
                       width=width, height=height, frame_skip=args.frame_skip, seed=args.seed,
                       episode_frames=args.episode_frames, shard_frames=args.shard_frames, weights=weights,
                       hud=args.hud, weapon=args.weapon, crosshair=args.crosshair)
    try:
        r = record(cfg)
    except (RuntimeError, ValueError) as e:
        print(f"magworld data record: {e}", file=sys.stderr)
        return 1
    pc = r["pose_check"]
    print(f"wrote {r['frames']} frames to {args.out} in {r['seconds']:.1f} s ({r['fps']:.0f} frames/s)")
    print(f"pose check: turn exact {pc['turn_exact']:.1%}, look exact {pc['look_exact']:.1%}, "
          f"movement as in free space {pc['move_free_space']:.1%} (the rest met walls)")
    return 0


def _register_check(inner):
    p = inner.add_parser("check", help="validate a dataset directory (non-zero exit if bad)",
                         description="Check every shard of a dataset: shapes, dtypes, lengths, NaNs, episode "
                         "index. Prints each problem; exits 1 if there is any.")
    p.add_argument("dir", help="dataset directory (holds dataset.json and shards/)")
    p.set_defaults(func=_check)


def _check(args) -> int:
    from worldmodel.data.validate import check_dataset

    problems, summary = check_dataset(args.dir)
    for pr in problems:
        print(f"error: {pr}", file=sys.stderr)
    if summary.get("interrupted_writes"):
        print(f"note: ignored unfinished shard writes {summary['interrupted_writes']}", file=sys.stderr)
    if problems:
        print(f"{args.dir}: INVALID ({len(problems)} problem(s))", file=sys.stderr)
        return 1
    print(f"{args.dir}: ok, {summary['shards']} shards, {summary['episodes']} episodes, {summary['frames']} frames")
    return 0


def _register_encode(inner):
    p = inner.add_parser("encode", help="encode a dataset's frames once into its latent cache (DATA/latents/)",
                         description="Encode every frame with an autoencoder and keep the latents beside the dataset "
                         "(DATA/latents/<autoencoder hash>/), for the training stages over latents. Nothing is done "
                         "when the cache is current; a changed autoencoder or dataset gets a new one.")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--autoencoder", required=True, help="run or checkpoint directory of the autoencoder")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--batch-frames", type=int, default=1024, help="frames per encoder pass (default 1024)")
    p.set_defaults(func=_encode)


def _encode(args) -> int:
    import time

    import torch

    from worldmodel.data import latent_cache

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.monotonic()
    fresh = latent_cache.is_current(args.data, args.autoencoder)
    out = latent_cache.build(args.data, args.autoencoder, device, batch_frames=args.batch_frames)
    shape = latent_cache.load(args.data, args.autoencoder)[0].shape
    what = "already current" if fresh else f"encoded in {time.monotonic() - t0:.1f} s on {device}"
    print(f"{out}: {shape[0]} frames of latents {list(shape[1:])}, {what}")
    return 0


def _register_revisit(inner):
    from worldmodel.data.revisit import DEFAULT_KINDS, KINDS, LONG_AWAY_FRAMES

    p = inner.add_parser("revisit-bench", help="build the held-out revisit benchmark",
                         description="Record revisit cases on the held-out maps of worldmodel/data/splits.json: "
                         "a memorize segment moving away from a view, a return segment (actions + true frames) "
                         "and the frames where the camera is back at a memorized pose. Format: docs/dataset.md.")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--cases", type=int, default=64, help="number of cases (default 64)")
    p.add_argument("--kinds", nargs="+", default=list(DEFAULT_KINDS), choices=KINDS,
                   help="case kinds, used in turn (default: look-around out-and-back). long-away: the camera "
                   f"stays away from the remembered view for at least {LONG_AWAY_FRAMES} frames; look-first: the "
                   "session's first frames (the window's sinks) face elsewhere than the view returned to")
    p.add_argument("--resolution", default="160x120", help="frame size WxH (default 160x120)")
    p.add_argument("--frame-skip", type=int, default=2, help="engine tics per frame (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.set_defaults(func=_revisit)


def _revisit(args) -> int:
    from worldmodel.data.engine import parse_resolution
    from worldmodel.data.revisit import build_revisit_bench

    try:
        width, height = parse_resolution(args.resolution)
        if args.cases < 1:
            raise ValueError("--cases must be at least 1")
        cases = build_revisit_bench(args.out, args.cases, tuple(args.kinds), seed=args.seed, width=width,
                                    height=height, frame_skip=args.frame_skip)
    except (ValueError, RuntimeError) as e:
        print(f"magworld data revisit-bench: {e}", file=sys.stderr)
        return 1
    kinds = {k: sum(c["kind"] == k for c in cases) for k in dict.fromkeys(c["kind"] for c in cases)}
    away = sorted(c["away_frames"] for c in cases)
    print(f"wrote {len(cases)} cases to {args.out} ({kinds}); "
          f"{sum(len(c['revisits']) for c in cases)} revisit frames; away {away[0]}-{away[-1]} frames")
    return 0
