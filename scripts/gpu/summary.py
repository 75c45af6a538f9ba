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
elif kind == "memory":
    print(path, {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if "psnr" in k or "ssim" in k})
else:
    print(path, json.dumps(r)[:400])
