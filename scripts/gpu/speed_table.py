"""The summary table of scripts/gpu/speed.sh, printed last: one row per result file.
python3 scripts/gpu/speed_table.py DIR   (reads DIR/gen-*.json and DIR/serve-*.json)"""

import json
import sys
from pathlib import Path


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def row(cells, widths):
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))


def main(directory: str) -> None:
    d = Path(directory)
    gen = ["run", "frames/s", "first 21 f/s", "steady f/s", "steady p50/p99 ms", "video f/s first/steady",
           "TFLOP/s", "attn/matmul TFLOP/s", "ms attn/matmul/other", "setup s", "compiles"]
    rows = []
    for p in sorted(d.glob("gen-*.json")):
        r = load(p)
        if r is None:
            rows.append([p.stem, "no result"] + [""] * (len(gen) - 2))
            continue
        video = (f"{r['video_frames_per_s_first']}/{r['video_frames_per_s_steady']}"
                 if "video_frames_per_s_first" in r else "-")
        split = (f"{r.get('attention_tflop_per_s')}/{r.get('matmul_tflop_per_s')}"
                 if "pass_ms_attention" in r else "-")
        ms = (f"{r['pass_ms_attention']}/{r['pass_ms_matmul']}/{r['pass_ms_other']}"
              if "pass_ms_attention" in r else "-")
        rows.append([p.stem, r["frames_per_s"], r["frames_per_s_first"],
                     f"{r['frames_per_s_steady']} ({r['steady_slots']} slots, {r['steady_blocks']} blocks)",
                     f"{r['block_ms_p50_steady']}/{r['block_ms_p99_steady']}", video, r["tflop_per_s_steady"],
                     split, ms, r.get("setup_s", "-"), r.get("compiled_graphs", "-")])
    print("bench generate (latent frames/s; first = from an empty memory; steady = every block at the most slots)")
    widths = [max(len(str(x)) for x in col) for col in zip(gen, *rows)] if rows else [len(g) for g in gen]
    print(row(gen, widths))
    for r in rows:
        print(row(r, widths))
    serve = ["run", "clients", "frames/s (all)", "p50/p99 ms", "steps/pass", "late/early", "slots"]
    rows = []
    for p in sorted(d.glob("serve-*.json")):
        r = load(p)
        if r is None:
            rows.append([p.stem, "no result"] + [""] * (len(serve) - 2))
            continue
        rows.append([p.stem, r["clients"], r["frames_per_s"], f"{r['latency_ms_p50']}/{r['latency_ms_p99']}",
                     r["steps_per_model_pass"], r["late_vs_early"], r["memory_slots"]])
    print("\nbench serve (action-to-frame latency over loopback ZeroMQ, decode included)")
    widths = [max(len(str(x)) for x in col) for col in zip(serve, *rows)] if rows else [len(s) for s in serve]
    print(row(serve, widths))
    for r in rows:
        print(row(r, widths))


if __name__ == "__main__":
    main(sys.argv[1])
