"""The revisit benchmark: does the model redraw a place it saw a while ago?

For each held-out case (worldmodel/data/revisit.py): the memorize segment's true frames are
written into memory (as an engine would seed the runtime), then the return segment is generated
from its actions alone (the engine's poses are given for pose-indexed retrieval, as the runtime
gets them from a client). At every return frame whose pose matches a memorize frame, the
generated frame is scored
  against the engine's true frame there   ("ground-truth comparison")
  against the memorize frame at that pose ("history comparison")
with PSNR and SSIM (LPIPS needs pretrained weights that are not available offline). Frames are
aligned by best match within ±`align` frames, as MAG-Bench does, since a generated return may
run a frame early or late. Every strategy sees the same cases; copy-last (repeat the last
memorize frame) is the trivial baseline. The `memorypack` row (seed 2's other memory design)
runs its own checkpoint — a generator fine-tuned with its SemanticPack — on the same cases; its
memory held is the window's K/V plus the state ψ.

The headline (issue 12's target) keeps only the return frames whose view was last seen more than
`min_since_seen` frames ago (default: the `window` strategy's window, which then no longer holds
it), with per-frame and per-case means and paired bootstrap intervals over cases
(eval/bootstrap.py) for the comparisons in COMPARISONS; the same figures per case kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from worldmodel.bundle import WorldModel
from worldmodel.data.revisit import RevisitCase, last_seen
from worldmodel.eval.bootstrap import paired_bootstrap
from worldmodel.metrics import psnr, ssim

PSNR_CAP = 60.0


def _pair_scores(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    ta = torch.from_numpy(np.ascontiguousarray(a)).movedim(-1, -3)[None]
    tb = torch.from_numpy(np.ascontiguousarray(b)).movedim(-1, -3)[None]
    return min(float(psnr(ta, tb)[0]), PSNR_CAP), float(ssim(ta, tb)[0])


def _best(frame: np.ndarray, candidates: np.ndarray) -> tuple[float, float]:
    scores = [_pair_scores(frame, c) for c in candidates]
    return max(scores, key=lambda s: s[0])


@torch.no_grad()
def run_case(model: WorldModel, case: RevisitCase, strategy: str, memory_model: bool = True,
             seed: int = 0, align: int = 2, retrieval: bool = True, attend_all: bool = False) -> dict:
    """Generate the return segment of one case under one memory strategy; score its revisits.
    retrieval=False: attend to the newest slots only; attend_all: an attention budget as large as
    the memory (nothing to choose)."""
    bf = model.config.model.block_frames
    m = (case.memorize_frames // bf) * bf  # memory is written in whole blocks
    n = m + ((len(case.frames) - m) // bf) * bf
    frames = np.asarray(case.frames[:n])
    actions = torch.from_numpy(np.asarray(case.actions[:n], np.float32))
    poses = torch.from_numpy(np.asarray(case.poses[:n], np.float32))
    blocks = n // bf
    capacity = max(blocks * bf, model.config.memory.capacity_frames)
    roll = row_rollout(model, Row(strategy, memory_model, retrieval, attend_all), capacity)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    latents = model.encode(torch.from_numpy(frames[None, :m]))
    for j in range(0, m, bf):
        roll.observe(latents[:, j:j + bf], actions[None, j:j + bf], poses[None, j:j + bf])
    out = [frames[:m]]
    empty = torch.full((1,), -1, dtype=torch.long, device=model.device)
    for j in range(m, n, bf):
        x0 = roll.generate(actions[None, j:j + bf], empty, poses[None, j:j + bf], generator=gen)
        out.append(model.decode(x0)[0].cpu().numpy())
    generated = np.concatenate(out)
    rows = []
    for j, i in case.revisits:
        if not m <= j < n:
            continue
        lo, hi = max(m, j - align), min(n, j + align + 1)
        gt = _best(generated[j], frames[lo:hi])
        hist = _best(generated[j], frames[max(0, i - align):min(m, i + align + 1)])
        copy = _pair_scores(frames[m - 1], frames[j])
        seen = last_seen(np.asarray(case.poses), m, j)
        rows.append({"frame": j, "since_seen": j - (i if seen is None else seen), "gt_psnr": gt[0], "gt_ssim": gt[1],
                     "hist_psnr": hist[0], "hist_ssim": hist[1], "copy_last_psnr": copy[0], "copy_last_ssim": copy[1]})
    memory = roll.memory.state()
    if roll.semantic_pack is not None:  # memorypack: ψ is memory held too
        memory["pack_bytes"] = roll.pack_bytes()
        memory["bytes_held"] += memory["pack_bytes"]
    return {"case": case.name, "kind": case.kind, "away_frames": case.away_frames, "rows": rows, "memory": memory,
            "full_cache_bytes": n * roll.memory.bytes_per_slot}


@dataclass(frozen=True)
class Row:
    """One row of the table: a memory strategy and how it is run."""

    strategy: str
    memory_model: bool = True  # False: the generator writes `mag`'s slots ("w/o stage 1")
    retrieval: bool = True  # False: attend to the newest slots only
    attend_all: bool = False  # attend to every held slot (no budget, nothing to choose)


STRATEGIES = {
    "none": Row("none"),
    "window": Row("window"),
    "full": Row("full"),
    "mag w/o stage 1": Row("mag", memory_model=False),
    "mag": Row("mag"),
    "mag (recent only)": Row("mag", retrieval=False),  # ablation: no pose-indexed retrieval
    "mag (all slots)": Row("mag", attend_all=True),  # ablation: no attention budget
    "memorypack": Row("memorypack"),
}


def row_rollout(model: WorldModel, row: Row, capacity: int | None = None):
    """A fresh Rollout that runs `row` (a value of STRATEGIES), holding `capacity` frames (default:
    the model's memory.capacity_frames)."""
    roll = model.rollout(row.strategy, capacity=capacity, attention_budget=capacity if row.attend_all else None)
    roll.retrieval = row.retrieval
    if not row.memory_model:
        roll.memory_model = roll.generator  # "w/o stage 1": the generator's own last-frame K/V
    return roll


# (A, B) pairs whose difference A - B the headline reports with bootstrap intervals, when both ran.
COMPARISONS = [
    ("mag", "window"), ("mag", "full"), ("mag", "mag w/o stage 1"), ("mag (all slots)", "mag"),
    ("mag", "mag (recent only)"), ("mag", "memorypack"), ("mag", "none"), ("mag", "copy-last"),
]


def _scores(results: list[dict], key: str, min_since: int) -> list[np.ndarray]:
    """Per case, `key` of the return frames last seen more than `min_since` frames ago."""
    return [np.array([r[key] for r in res["rows"] if r["since_seen"] > min_since], np.float64) for res in results]


def _with_copy_last(per: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """`per` plus a `copy-last` entry whose rows score the last memorize frame (the same frames)."""
    some = next(iter(per.values()), [])
    copy = [{**res, "rows": [{**r, "gt_psnr": r["copy_last_psnr"], "gt_ssim": r["copy_last_ssim"]} for r in res["rows"]]}
            for res in some]
    return {**per, "copy-last": copy}


def summarize(per: dict[str, list[dict]], min_since: int, seed: int = 0) -> dict:
    """The headline over frames last seen more than `min_since` frames ago: per strategy the
    per-frame and per-case means of GT PSNR (and per-frame GT SSIM), the COMPARISONS with paired
    bootstrap intervals, and per case kind the same means beside those over every revisit frame.
    per: strategy -> `run_case` results, the same cases in the same order for every strategy."""
    per = _with_copy_last(per)

    def means(results):
        p = _scores(results, "gt_psnr", min_since)
        frames = np.concatenate(p) if p else np.zeros(0)
        cases = [x.mean() for x in p if len(x)]
        every = [r["gt_psnr"] for res in results for r in res["rows"]]
        return {"frame_mean_psnr": float(frames.mean()) if len(frames) else None,
                "case_mean_psnr": float(np.mean(cases)) if cases else None,
                "frame_mean_ssim": (float(np.concatenate(_scores(results, "gt_ssim", min_since)).mean())
                                    if len(frames) else None),
                "frames": int(len(frames)), "cases": len(cases),
                "all_frames_psnr": float(np.mean(every)) if every else None, "all_frames": len(every)}

    rows = {name: means(results) for name, results in per.items()}
    comparisons = []
    for a, b in COMPARISONS:
        if a in per and b in per and rows[a]["frames"]:
            c = paired_bootstrap(_scores(per[a], "gt_psnr", min_since), _scores(per[b], "gt_psnr", min_since),
                                 seed=seed)
            comparisons.append({"a": a, "b": b, **c})
    kinds = dict.fromkeys(res["kind"] for res in next(iter(per.values()), []))
    by_kind = {}
    for kind in kinds:
        sub = {name: [res for res in results if res["kind"] == kind] for name, results in per.items()}
        away = [res["away_frames"] for res in next(iter(sub.values()))]
        by_kind[kind] = {"cases": len(away), "away_frames_min": int(min(away)), "away_frames_max": int(max(away)),
                         "rows": {name: means(results) for name, results in sub.items()}}
    return {"min_since_seen": min_since, "rows": rows, "comparisons": comparisons, "by_kind": by_kind}


def revisit_benchmark(model: WorldModel, cases: Iterable[RevisitCase], strategies: list[str], max_cases: int,
                      seed: int = 0, progress: bool = True, memorypack: WorldModel | None = None,
                      min_since_seen: int | None = None) -> dict:
    """memorypack: the checkpoint that runs the `memorypack` row (default: `model`, if it has a
    SemanticPack). min_since_seen: the headline's threshold (default: the window's length)."""
    from tqdm import tqdm

    cases = [c for _, c in zip(range(max_cases), cases)]
    per = {s: [] for s in strategies}
    for name in strategies:
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}")
        row = STRATEGIES[name]
        runs = memorypack if name == "memorypack" and memorypack is not None else model
        if name == "memorypack" and runs.semantic_pack is None:
            raise ValueError("the memorypack row needs a MemoryPack checkpoint (with semantic_pack.safetensors): "
                             "pass one with --memorypack CKPT, made by `magworld train memorypack` + `train package`")
        for case in tqdm(cases, desc=name, disable=not progress):
            per[name].append(run_case(runs, case, row.strategy, row.memory_model, seed, retrieval=row.retrieval,
                                      attend_all=row.attend_all))
    table = {}
    for name, results in per.items():
        rows = [r for res in results for r in res["rows"]]
        if not rows:
            continue
        mean = lambda k: float(np.mean([r[k] for r in rows]))  # noqa: E731
        table[name] = {
            "gt_psnr": mean("gt_psnr"), "gt_ssim": mean("gt_ssim"),
            "hist_psnr": mean("hist_psnr"), "hist_ssim": mean("hist_ssim"),
            "kv_bytes_held": float(np.mean([res["memory"]["bytes_held"] for res in results])),
            "revisit_frames": len(rows),
        }
    some = next(iter(per.values()))
    copy_rows = [r for res in some for r in res["rows"]]
    if copy_rows:
        table["copy-last"] = {"gt_psnr": float(np.mean([r["copy_last_psnr"] for r in copy_rows])),
                              "gt_ssim": float(np.mean([r["copy_last_ssim"] for r in copy_rows])),
                              "hist_psnr": None, "hist_ssim": None, "kv_bytes_held": 0.0,
                              "revisit_frames": len(copy_rows)}
    if min_since_seen is None:
        min_since_seen = model.config.memory.window_frames
    return {"cases": len(cases), "table": table, "headline": summarize(per, min_since_seen, seed), "per_case": per}


def plot_since_seen(result: dict, path) -> None:
    """PSNR (ground truth) against frames since the view was last seen, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for name, results in result["per_case"].items():
        rows = [r for res in results for r in res["rows"]]
        if not rows:
            continue
        since = np.array([r["since_seen"] for r in rows])
        val = np.array([r["gt_psnr"] for r in rows])
        edges = np.unique(np.quantile(since, np.linspace(0, 1, 8)))
        if len(edges) < 2:
            continue
        idx = np.clip(np.digitize(since, edges[1:-1]), 0, len(edges) - 2)
        centers = [(edges[k] + edges[k + 1]) / 2 for k in range(len(edges) - 1) if (idx == k).any()]
        means = [val[idx == k].mean() for k in range(len(edges) - 1) if (idx == k).any()]
        ax.plot(centers, means, marker="o", label=name)
    ax.set_xlabel("frames since the view was last seen")
    ax.set_ylabel("PSNR vs engine (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
