"""`magworld bench record`: recorder throughput, frames written per second, on this machine."""

from __future__ import annotations

import os
import platform
import tempfile


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def register(subparsers):
    p = subparsers.add_parser("record", help="recorder throughput (frames/s written)",
                              description="Record a dataset into a temporary directory with `magworld data "
                              "record`'s code and report frames written per second, including start-up and disk.")
    p.add_argument("--frames", type=int, default=20000, help="frames to record (default 20000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: cores)")
    p.add_argument("--resolution", default="160x120", help="WxH (default 160x120)")
    p.add_argument("--policy", default="mix", help="policy (default mix)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from worldmodel.data.engine import parse_resolution
    from worldmodel.data.recorder import RecordConfig, record

    w, h = parse_resolution(args.resolution)
    with tempfile.TemporaryDirectory(prefix="magworld-bench-") as out:
        r = record(RecordConfig(out=out, policy=args.policy, frames=args.frames, workers=args.workers, width=w,
                                height=h))
    print("| machine | resolution | workers | frames | seconds | frames/s |")
    print("|---|---|---|---|---|---|")
    print(f"| {machine()} | {w}x{h} | {args.workers} | {r['frames']} | {r['seconds']:.1f} | {r['fps']:.0f} |")
    return 0
