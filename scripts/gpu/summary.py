"""One line per result file, for the GPU logs: python3 scripts/gpu/summary.py KIND FILE.json"""

import json
import sys

kind, path = sys.argv[1], sys.argv[2]
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
    for name, v in r["summary"].items():
        if "psnr_turns_vs_engine" not in v or "delta_db" not in v:
            continue
        first = {k: [] for k in ("true", "mirrored")}
        for case in r.get("per_case", []):
            p = case["predictors"].get(name, {})
            for side in ("left", "right"):
                first["true"] += p.get("psnr_vs_engine", {}).get(side, [])[:3]
                first["mirrored"] += p.get("psnr_mirrored_vs_engine", {}).get(side, [])[:3]
        copy = [x for case in r.get("per_case", []) for side in ("left", "right")
                for x in case.get("copy-last", {}).get(side, [])[:3]]
        mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
        print(f"{path} {name}: turns {v['psnr_turns_vs_engine']:.2f} mirrored {v['psnr_mirrored_vs_engine']:.2f} "
              f"delta {v['delta_db']:+.2f} dB; first block {mean(first['true']):.2f} mirrored "
              f"{mean(first['mirrored']):.2f} copy-last {mean(copy):.2f}; left vs right {v['left_vs_right_psnr']:.1f} dB")
elif kind == "memory":
    print(path, {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if "psnr" in k or "ssim" in k})
else:
    print(path, json.dumps(r)[:400])
