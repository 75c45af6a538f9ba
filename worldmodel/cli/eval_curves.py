"""`magworld eval curves RUN_DIR`: plot a training run's metrics CSV to a PNG."""

from __future__ import annotations

import math
from pathlib import Path

# Metrics that are bookkeeping rather than training signals.
SKIP = {"elapsed_min"}


def register(sub):
    p = sub.add_parser("curves", help="plot a run's metrics.csv",
                       description="magworld eval curves: plot every metric of a training run against the step.")
    p.add_argument("run_dir", type=Path, help="a `magworld train --out` directory")
    p.add_argument("--out", type=Path, default=None, help="PNG path (default: RUN_DIR/curves.png)")
    p.set_defaults(func=run)


def plot_curves(run_dir: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from worldmodel.train.metrics_log import read_metrics

    series = {k: v for k, v in read_metrics(run_dir).items() if k not in SKIP and v}
    if not series:
        raise SystemExit(f"magworld eval curves: {run_dir}/metrics.csv has no rows yet")
    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, points) in zip(axes.flat, series.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, lw=1.2)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if name in ("loss", "l1", "l2", "edge", "kl", "grad_norm") and min(values) > 0:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run(args) -> int:
    out = args.out or args.run_dir / "curves.png"
    print(plot_curves(args.run_dir, out))
    return 0
