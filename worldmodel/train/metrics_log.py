"""Training metrics: a CSV file per run (always), TensorBoard (when installed), a tqdm bar."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from tqdm import tqdm

METRICS_FILE = "metrics.csv"


class MetricsLogger:
    """Appends `step, <metric>...` rows to `<run>/metrics.csv`.

    Columns grow when a new metric appears (the file is rewritten with the wider header). On
    resume, `truncate_after(step)` drops rows logged after the checkpoint, so curves have no
    duplicated steps. Only the main process should log (pass enabled=False elsewhere).
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self.columns: list[str] = []
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), None)
            self.columns = header or []
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:  # tensorboard is optional; the CSV is the record
                self.writer = None

    def _rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        tmp = self.path.with_name(self.path.name + ".partial")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, restval="")
            w.writeheader()
            w.writerows(rows)
        tmp.replace(self.path)

    def truncate_after(self, step: int) -> None:
        if self.enabled and self.path.is_file():
            self._rewrite([r for r in self._rows() if r.get("step") and int(float(r["step"])) <= step])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        keys = [k for k in metrics if k not in self.columns]
        if keys or not self.columns:
            rows = self._rows()
            self.columns = (self.columns or ["step"]) + [k for k in keys if k != "step"]
            self._rewrite(rows)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, restval="").writerow({"step": step, **metrics})
        if self.writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(step, value)] from a run's CSV (empty cells skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {METRICS_FILE}; is it a `magworld train --out` directory?")
    series: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row["step"]))
            for k, v in row.items():
                if k != "step" and v not in ("", None):
                    series.setdefault(k, []).append((step, float(v)))
    return series


class Progress:
    """A tqdm bar over steps (disabled off the main process); shows the latest metrics."""

    def __init__(self, total: int | None, initial: int = 0, enabled: bool = True, desc: str = "train"):
        self.bar = tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True)

    def update(self, n: int = 1, metrics: dict[str, float] | None = None) -> None:
        self.bar.update(n)
        if metrics:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)

    def write(self, message: str) -> None:
        self.bar.write(message)

    def close(self) -> None:
        self.bar.close()
