"""`magworld train package`: assemble trained runs into one shippable checkpoint directory.

Takes the EMA weights of an autoencoder run, a generator run and (for MAG) a memory-model run,
plus, when the generator run is a `memorypack` run, its SemanticPack (`semantic_pack`; the
packaged config then defaults to the `memorypack` strategy). It stores them as safetensors (optionally in bfloat16 to halve the size; loading casts back to the
model's dtype), with one config.json and a model card (README.md) built from the runs' own
metrics.csv and machine.txt — nothing in the card is typed in by hand.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from worldmodel.train import checkpoint as ckpt


def _run_summary(run: Path) -> dict:
    run = Path(run)
    rows = []
    metrics = run / "metrics.csv"
    if metrics.is_file():
        with open(metrics) as f:
            rows = list(csv.DictReader(f))
    machine = (run / "machine.txt").read_text().strip() if (run / "machine.txt").is_file() else "unknown"
    last = rows[-1] if rows else {}
    return {
        "run": run.name,
        "steps": int(last.get("step", 0) or 0),
        "minutes": round(sum(float(r["elapsed_min"]) for r in _segment_ends(rows)), 1) if rows else 0.0,
        "machine": machine,
        "last_metrics": {k: v for k, v in last.items() if k not in ("step", "lr", "elapsed_min")},
    }


def _segment_ends(rows):
    """elapsed_min restarts at each resumed command: the last row of each segment."""
    out = []
    for i, r in enumerate(rows):
        nxt = rows[i + 1] if i + 1 < len(rows) else None
        if nxt is None or float(nxt["elapsed_min"]) < float(r["elapsed_min"]):
            out.append(r)
    return out


def package(out: Path, autoencoder: Path, generator: Path, memory_model: Path | None,
            generator_name: str = "generator", dtype: str = "bfloat16", data_note: str = "",
            extra_card: str = "") -> Path:
    out = Path(out)
    gen_dir = ckpt.resolve_checkpoint(generator)
    config = ckpt.load_config(gen_dir)
    cast = getattr(torch, dtype)
    parts = {"autoencoder": (autoencoder, "autoencoder"), "generator": (generator, generator_name)}
    if memory_model is not None:
        parts["memory_model"] = (memory_model, "memory_model")
    if generator_name == "generator" and any(gen_dir.glob("semantic_pack*.safetensors")):
        parts["semantic_pack"] = (generator, "semantic_pack")  # trained with this generator: ship together
        config.memory.strategy = "memorypack"
    with ckpt.atomic_directory(out) as staging:
        ckpt.save_config(staging, config)
        for name, (run, source) in parts.items():
            state = ckpt.load_weights(ckpt.resolve_checkpoint(run), source)
            # buffers such as the latent statistics keep float32
            state = {k: (v.to(cast) if v.is_floating_point() and v.numel() > 64 else v) for k, v in state.items()}
            ckpt.save_weights(staging, name, state)
        runs = {name: _run_summary(Path(run)) for name, (run, _) in parts.items()}
        (staging / "runs.json").write_text(json.dumps(runs, indent=2) + "\n")
        (staging / "README.md").write_text(_card(config, runs, dtype, data_note, extra_card))
    return out


def _card(config, runs, dtype, data_note, extra) -> str:
    m = config.model
    lines = [
        f"# magworld checkpoint `{config.name}`",
        "",
        f"Frames {config.autoencoder.frame_width}x{config.autoencoder.frame_height} RGB; latents "
        f"{m.latent_channels}x{m.latent_height}x{m.latent_width}; transformer dim {m.dim}, {m.layers} layers, "
        f"{m.heads} heads, patch {list(m.patch)}, block of {m.block_frames} frames; "
        f"{len(config.sampler.timesteps)} sampling steps; memory `{config.memory.strategy}`. Weights stored in {dtype}.",
        "",
        f"Data: {data_note or 'see docs/dataset.md'}",
        "",
        "| part | run | steps | minutes | machine | last logged metrics |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        metrics = ", ".join(f"{k}={float(v):.4g}" for k, v in r["last_metrics"].items() if v not in ("", None))
        lines.append(f"| {name} | {r['run']} | {r['steps']} | {r['minutes']} | {r['machine']} | {metrics} |")
    lines += ["", "Minutes are the wall-clock minutes of the training commands of the run that made each part "
              "(earlier stages it was initialised from are listed in their own runs).", ""]
    if extra:
        lines += [extra, ""]
    return "\n".join(lines)


def register_package(stages) -> None:
    p = stages.add_parser("package", help="assemble trained runs into a shippable checkpoint directory",
                          description="magworld train package: gather the EMA weights of an autoencoder, a generator "
                          "and (for MAG) a memory-model run into one checkpoint directory with a model card.")
    p.add_argument("--autoencoder", required=True, type=Path, help="autoencoder run directory")
    p.add_argument("--generator", required=True, type=Path,
                   help="generator run directory (dmd, generator, memorypack: its semantic_pack comes along)")
    p.add_argument("--generator-name", default="generator",
                   help="weights name inside the generator run (generator, teacher; default generator)")
    p.add_argument("--memory-model", type=Path, help="memory-model run directory (MAG)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory to write (e.g. checkpoints/mine)")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--data-note", default="", help="one line on the training data for the model card")
    p.add_argument("--card", default="", help="extra Markdown for the model card (e.g. measured figures)")
    p.set_defaults(func=lambda a: (package(a.out, a.autoencoder, a.generator, a.memory_model, a.generator_name,
                                           a.dtype, a.data_note, a.card), print(f"wrote {a.out}"))[0] and 0)
