"""`magworld eval revisit`: the revisit benchmark across memory strategies."""

from __future__ import annotations

import json
from pathlib import Path

from worldmodel.cli.eval_common import device_of, emit


def register(sub):
    p = sub.add_parser("revisit", help="revisit benchmark: PSNR/SSIM at returning views, per memory strategy",
                       description="magworld eval revisit: feed each case's memorize segment, generate the return "
                       "segment from actions, and score the frames where the camera is back at a remembered pose "
                       "against the engine (ground truth) and against the remembered frame (history), for each "
                       "memory strategy; also KV bytes held. Writes a plot of PSNR against frames since seen.")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--bench", required=True, type=Path, help="revisit benchmark directory (magworld data revisit-bench)")
    p.add_argument("--strategies", default="none,window,full,mag w/o stage 1,mag",
                   help="comma-separated: none, window, full, 'mag w/o stage 1', mag, memorypack, and the ablations "
                   "'mag (recent only)' (no pose retrieval), 'mag (all slots)' (no attention budget)")
    p.add_argument("--memorypack", type=Path, default=None, metavar="CKPT",
                   help="a MemoryPack checkpoint (magworld train memorypack + train package): adds the memorypack "
                   "row, run with that checkpoint's own generator and SemanticPack")
    p.add_argument("--cases", type=int, default=64)
    p.add_argument("--min-since-seen", type=int, default=None, metavar="FRAMES",
                   help="the headline scores only return frames whose view was last seen more than FRAMES frames "
                   "ago (default: the checkpoint's memory.window_frames, so the window no longer holds it)")
    p.add_argument("--plot", type=Path, default=None, help="PNG of PSNR against frames since seen")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    from worldmodel.bundle import WorldModel
    from worldmodel.data.revisit import load_cases
    from worldmodel.eval.revisit import plot_since_seen, revisit_benchmark

    model = WorldModel.load(args.checkpoint, device_of(args))
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    memorypack = None
    if args.memorypack:
        memorypack = WorldModel.load(args.memorypack, device_of(args))
        if memorypack.semantic_pack is None:
            raise ValueError(f"{args.memorypack} has no semantic_pack weights: --memorypack takes a packaged "
                             "`magworld train memorypack` run (magworld train package --generator RUN)")
        if "memorypack" not in strategies:
            strategies.append("memorypack")
    if args.min_since_seen is not None and args.min_since_seen < 0:
        raise ValueError(f"--min-since-seen must be >= 0, got {args.min_since_seen}")
    result = revisit_benchmark(model, load_cases(args.bench), strategies, args.cases, args.seed,
                               memorypack=memorypack, min_since_seen=args.min_since_seen)
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_since_seen(result, args.plot)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.with_suffix(".cases.json").write_text(json.dumps(result["per_case"]) + "\n")
    width = max(len(k) for k in result["table"])
    print(f"{'strategy':<{width}}  GT PSNR  GT SSIM  hist PSNR  hist SSIM  KV MB held  frames")
    for k, v in result["table"].items():
        h = "     -   " if v["hist_psnr"] is None else f"{v['hist_psnr']:8.2f} "
        hs = "     -   " if v["hist_ssim"] is None else f"{v['hist_ssim']:9.3f}"
        print(f"{k:<{width}}  {v['gt_psnr']:7.2f}  {v['gt_ssim']:7.3f}  {h} {hs}  {v['kv_bytes_held'] / 1e6:10.2f}  {v['revisit_frames']}")
    print_headline(result["headline"])
    out = {"checkpoint": str(args.checkpoint), "cases": result["cases"], "table": result["table"],
           "headline": result["headline"]}
    if args.memorypack:
        out["memorypack_checkpoint"] = str(args.memorypack)
    return emit(args, out)


def _f(v, fmt="7.2f"):
    return f"{'-':>{fmt.split('.')[0]}}" if v is None else format(v, fmt)


def print_headline(h: dict) -> None:
    """The headline table, its paired comparisons and the per-kind table, as text."""
    rows = h["rows"]
    width = max(len(k) for k in rows) if rows else 8
    print(f"\nheadline: return frames last seen more than {h['min_since_seen']} frames ago")
    print(f"{'strategy':<{width}}  per-frame PSNR  per-case PSNR  SSIM    frames  cases")
    for k, v in rows.items():
        print(f"{k:<{width}}  {_f(v['frame_mean_psnr'], '14.2f')}  {_f(v['case_mean_psnr'], '13.2f')}  "
              f"{_f(v['frame_mean_ssim'], '6.3f')}  {v['frames']:6d}  {v['cases']:5d}")
    for c in h["comparisons"]:
        fi, ci = c["frame_interval"], c["case_interval"]
        print(f"  {c['a']} - {c['b']}: per frame {c['frame_mean_diff']:+.2f} dB [{fi[0]:+.2f}, {fi[1]:+.2f}], "
              f"per case {c['case_mean_diff']:+.2f} dB [{ci[0]:+.2f}, {ci[1]:+.2f}], ahead in "
              f"{c['cases_ahead']} of {c['cases']} cases ({c['level']:.0%} paired bootstrap over cases)")
    for kind, v in h["by_kind"].items():
        print(f"\nkind {kind}: {v['cases']} cases, away {v['away_frames_min']}-{v['away_frames_max']} frames")
        print(f"{'strategy':<{width}}  per-frame PSNR  per-case PSNR  frames  all-frames PSNR  all frames")
        for k, r in v["rows"].items():
            print(f"{k:<{width}}  {_f(r['frame_mean_psnr'], '14.2f')}  {_f(r['case_mean_psnr'], '13.2f')}  "
                  f"{r['frames']:6d}  {_f(r['all_frames_psnr'], '15.2f')}  {r['all_frames']:10d}")
