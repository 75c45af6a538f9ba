"""One line per result file, for the GPU logs: python3 scripts/gpu/summary.py KIND FILE.json"""

import json
import sys

kind, path = sys.argv[1], sys.argv[2]
if kind == "pick-autoencoder":
    # pick-autoencoder EVAL.json=RUN ...: print the RUN to train on, the higher held-out PSNR unless
    # another is sharper and within 0.2 dB of it (`magworld eval autoencoder --json` files)
    runs = []
    for arg in sys.argv[2:]:
        f, run = arg.split("=", 1)
        try:
            r = json.load(open(f))
            runs.append((r["psnr_mean"], r["sharpness_ratio"], run))
        except (OSError, ValueError, KeyError):
            pass
    if runs:
        best = max(runs)
        close = [x for x in runs if x[0] >= best[0] - 0.2]
        print(max(close, key=lambda x: x[1])[2])
    sys.exit(0)
try:
    r = json.load(open(path))
except (OSError, ValueError) as e:
    print(f"{kind} {path}: no result ({e})")
    sys.exit(0)
if kind == "next-block":
    print(path, {k: round(v["psnr"]["mean"], 2) for k, v in r["results"].items()})
elif kind == "turns":
    # per predictor: PSNR over the turn frames with the true and mirrored turns, and over the first
    # block of the turn alone (where the engine mostly slides the view)
    if "per_case" not in r and r.get("details"):  # --json holds the summary; the per-case file beside it
        try:
            r["per_case"] = json.load(open(r["details"]))["per_case"]
        except (OSError, ValueError, KeyError):
            pass
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    if "turn-last" in r["summary"]:
        v = r["summary"]["turn-last"]
        print(f"{path} turn-last (the last frame turned by the engine's yaw): turns {v['psnr_turns_vs_engine']:.2f} "
              f"mirrored {v['psnr_mirrored_vs_engine']:.2f} delta {v['delta_db']:+.2f} dB")
    for name, v in r["summary"].items():
        if "left_vs_right_psnr" not in v:  # the yardsticks
            continue
        first = {k: [] for k in ("true", "mirrored")}
        for case in r.get("per_case", []):
            p = case["predictors"].get(name, {})
            for side in ("left", "right"):
                first["true"] += p.get("psnr_vs_engine", {}).get(side, [])[:3]
                first["mirrored"] += p.get("psnr_mirrored_vs_engine", {}).get(side, [])[:3]
        copy = [x for case in r.get("per_case", []) for side in ("left", "right")
                for x in case.get("copy-last", {}).get(side, [])[:3]]
        print(f"{path} {name}: turns {v['psnr_turns_vs_engine']:.2f} mirrored {v['psnr_mirrored_vs_engine']:.2f} "
              f"delta {v['delta_db']:+.2f} dB; first block {mean(first['true']):.2f} mirrored "
              f"{mean(first['mirrored']):.2f} copy-last {mean(copy):.2f}; left vs right {v['left_vs_right_psnr']:.1f} dB")
        if "implied_yaw" in v:
            fmt = lambda ys: "/".join(f"{y:+.1f}" for y in ys)  # noqa: E731
            print(f"    implied turn, first frames: left {fmt(v['implied_yaw']['left'])} right {fmt(v['implied_yaw']['right'])}"
                  f" (engine {fmt(v['engine_yaw']['left'])} / {fmt(v['engine_yaw']['right'])}); "
                  f"turn followed {v['turn_followed']:.2f}")
elif kind == "faster-layout":
    # bench train --stage autoencoder --json: the layout with more steps/s ("default" or "channels-last")
    best = max(r["rows"], key=lambda row: row["steps_per_s"])
    print(best["run"].split(", ", 1)[1])
elif kind == "autoencoder":
    print(f"{path}: PSNR {r['psnr_mean']:.2f} dB, SSIM {r['ssim_mean']:.4f}, sharpness {r['sharpness_ratio']:.3f}x")
elif kind == "memory":
    print(path, {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if "psnr" in k or "ssim" in k})
else:
    print(path, json.dumps(r)[:400])
