"""Export a checkpoint's networks as static-shape ONNX graphs plus a manifest.

Graphs (see export/wrappers.py for every input and output):

    generator_step  one denoising step of one block against S memory slots
    memory_write    the clean pass of a finished block -> K/V of the frames the strategy keeps
    memory_step     the memory model's denoising step (decoding a slot back to pixels; MAG only)
    decoder         latents of one block -> uint8 frames
    encoder         uint8 frames of one block -> latents (start frames, `observe`)

The PyTorch exporter (torch.export -> ONNX, opset >= 18) lowers SDPA with a bool mask to
MatMul/Softmax. RoPE and timestep angles are computed in float32 inside the graphs (float64 in
PyTorch; see worldmodel/model/rope.py:angle_dtype), so no graph holds a float64 tensor.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from export.manifest import (
    FORMAT, ExportError, checkpoint_hash, graph_io, sha256_file, tool_versions, write_manifest,
)
from export.wrappers import Decoder, Encoder, GeneratorStep, MemoryWrite
from worldmodel.config import WorldModelConfig, apply_overrides
from worldmodel.memory import make_strategy

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MIN_OPSET = 18
BF16_OPSET = 22
PROMPTS_FILE = "prompts.safetensors"


@dataclass
class MemoryLayout:
    """The memory a set of graphs is exported for."""

    strategy: str
    capacity: int
    attention_budget: int
    slots: int  # S: attended slots, the memory_k/v input size
    kept_frames: list[int]
    writer: str  # "generator" or "memory_model" (the network the memory_write graph holds)

    @classmethod
    def of(cls, config: WorldModelConfig, has_memory_model: bool) -> "MemoryLayout":
        mem = config.memory
        strategy = make_strategy(mem, config.model.block_frames)
        if strategy.semantic_state:
            raise ExportError(
                f"memory strategy {strategy.name!r} cannot be exported: its long-term state ψ is updated by the "
                "SemanticPack network, which has no graph here; serve it with the torch backend, or export "
                "the same checkpoint for another strategy (e.g. --strategy window)"
            )
        # S: the most slots a block can attend to — `mag` its attention budget, `window` its sinks
        # + window (it never holds more, however large the capacity: S = capacity made every
        # window session capture 97 graph variants where 13 are ever used), `full` every slot,
        # `none` nothing.
        slots = strategy.steady_slots(mem.capacity_frames)
        writer = "memory_model" if strategy.writer == "memory_model" and has_memory_model else "generator"
        # A graph input cannot have a zero-sized axis: an empty memory is one slot that is never valid.
        return cls(strategy.name, mem.capacity_frames, mem.attention_budget, max(slots, 1),
                   strategy.kept_frames(), writer)


def parse_precision(precision: str) -> torch.dtype:
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ExportError(f"unsupported precision {precision!r}; choose one of {', '.join(PRECISIONS)}") from None


def load_for_export(checkpoint: str | Path, memory_overrides: list[str] | None = None):
    """(WorldModel on CPU, its config with memory overrides, checkpoint directory), with a
    missing checkpoint, or one that does not fit its own config.json, reported as an ExportError."""
    from worldmodel.bundle import WorldModel
    from worldmodel.train.checkpoint import CheckpointError, resolve_checkpoint

    try:
        directory = resolve_checkpoint(checkpoint)
        model = WorldModel.load(directory, "cpu")
    except CheckpointError as e:
        # The checkpoint's own words: missing, incomplete, or weights that do not fit config.json.
        raise ExportError(f"cannot export {checkpoint}: {e}") from e
    config = apply_overrides(model.config, memory_overrides or [])
    model.config = config
    return model, config, directory


def example_inputs(config: WorldModelConfig, layout: MemoryLayout, dtype: torch.dtype, seed: int = 0,
                   device: torch.device | str = "cpu") -> dict:
    """Random inputs of every graph, by graph then input name (also what the tests compare with).
    The memory inputs are drawn on `device` (at Wan size they are 2 x 6 GB: made on the CPU and
    copied they would take seconds); the rest on the CPU."""
    from worldmodel.actions import ACTION_HIGH, ACTION_LOW

    m, ae = config.model, config.autoencoder
    g = torch.Generator().manual_seed(seed)
    bf = m.block_frames
    latents = (1, bf, m.latent_channels, m.latent_height, m.latent_width)
    memory = (m.layers, 1, layout.slots, m.tokens_per_frame, m.heads, m.head_dim)
    lo, hi = torch.as_tensor(ACTION_LOW), torch.as_tensor(ACTION_HIGH)
    actions = (lo + (hi - lo) * torch.rand(1, bf, m.action_dim, generator=g)).to(dtype)
    frame_pos = torch.arange(2 * bf, 3 * bf, dtype=torch.int64)
    valid = torch.rand(layout.slots, generator=g) < 0.7
    valid[0] = True
    if torch.device(device).type == "cpu":
        k, v = torch.randn(memory, generator=g).to(dtype), torch.randn(memory, generator=g).to(dtype)
    else:
        gd = torch.Generator(device).manual_seed(seed)
        k, v = (torch.randn(memory, generator=gd, device=device, dtype=dtype) for _ in range(2))
    mem = {"memory_k": k, "memory_v": v, "memory_valid": valid}
    step = {
        "x_t": torch.randn(latents, generator=g).to(dtype),
        "sigma": torch.tensor([0.75]),
        "actions": actions,
        "frame_pos": frame_pos,
        "prompt": torch.randn(1, m.text_tokens, m.text_dim, generator=g).to(dtype),
        **mem,
    }
    write = {"x0": torch.randn(latents, generator=g).to(dtype), "actions": actions, "frame_pos": frame_pos, **mem}
    return {
        "generator_step": step,
        "memory_step": step,
        "memory_write": write,
        "decoder": {"latents": torch.randn(latents[1:], generator=g).to(dtype)},
        "encoder": {"frames": torch.randint(0, 256, (bf, ae.frame_height, ae.frame_width, 3), generator=g,
                                            dtype=torch.uint8)},
    }


OUTPUTS = {
    "generator_step": ["x0", "v"],
    "memory_step": ["x0", "v"],
    "memory_write": ["k_new", "v_new"],
    "decoder": ["frames"],
    "encoder": ["latents"],
}


def build_wrappers(model, layout: MemoryLayout, dtype: torch.dtype, device: torch.device | str = "cpu",
                   all_valid: bool = False) -> dict[str, torch.nn.Module]:
    """The modules to export, by graph name, cast to `dtype`, on `device` (their own buffers
    too, e.g. MemoryWrite.keep_index) and in eval mode. all_valid: the memory inputs will hold
    only slots with data (see export/wrappers.py)."""
    gen = model.generator
    mem = model.memory_model
    wrappers = {"generator_step": GeneratorStep(gen, all_valid)}
    if mem is not None:
        wrappers["memory_step"] = GeneratorStep(mem, all_valid)
    if layout.kept_frames:
        writer = mem if layout.writer == "memory_model" else gen
        wrappers["memory_write"] = MemoryWrite(writer, layout.kept_frames, all_valid)
    wrappers["decoder"] = Decoder(model.autoencoder)
    wrappers["encoder"] = Encoder(model.autoencoder, dtype)
    return {k: w.to(device=device, dtype=dtype).eval() for k, w in wrappers.items()}


def export_graph(module: torch.nn.Module, inputs: dict, outputs: list[str], path: Path, opset: int) -> None:
    """One module -> one checked ONNX file (weights in `<file>.data` when the graph is over 2 GB)."""
    import onnx

    log = io.StringIO()
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed" and progress lines
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with torch.no_grad(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            program = torch.onnx.export(
                module, tuple(inputs.values()), input_names=list(inputs), output_names=outputs,
                opset_version=opset, dynamo=True, optimize=True,
            )
        except Exception as e:
            raise ExportError(f"exporting {path.name} failed: {e}\n--- exporter log ---\n{log.getvalue()[-4000:]}") from e
        finally:
            quiet.setLevel(level)
    size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    # The protobuf limit is 2 GB; bigger graphs keep their weights in a side file.
    program.save(str(path), external_data=size > 1.8e9)
    onnx.checker.check_model(str(path), full_check=True)


def prompt_tables(model) -> dict[str, torch.Tensor]:
    """The prompt tables the host looks up for the `prompt` input (float32), by
    `<network>.null` / `<network>.scenes` (graph_session.GraphSession._prompt reads them)."""
    tables = {}
    for name, net in (("generator", model.generator), ("memory_model", model.memory_model)):
        if net is None or not net.cfg.cross_attention:
            continue
        tables[f"{name}.null"] = net.null_prompt.detach().float().contiguous()
        if net.scene_prompts is not None:
            tables[f"{name}.scenes"] = net.scene_prompts.detach().float().contiguous()
    return tables


def save_prompts(model, directory: Path) -> str | None:
    """Write prompt_tables(model) beside the graphs; returns the file name (None: no tables)."""
    tables = prompt_tables(model)
    if not tables:
        return None
    save_file(tables, str(directory / PROMPTS_FILE))
    return PROMPTS_FILE


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    precision: str = "fp32",
    memory_overrides: list[str] | None = None,
    opset: int = MIN_OPSET,
    graphs: list[str] | None = None,
    progress=None,
) -> dict:
    """Export every graph of `checkpoint` into directory `out` (replaced) and return the manifest.

    memory_overrides: `memory.field=value` items (strategy, capacity_frames, attention_budget).
    graphs: a subset of graph names to export (default: all that apply).
    """
    dtype = parse_precision(precision)
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: magworld exports need opset >= {MIN_OPSET}")
    if dtype == torch.bfloat16 and opset < BF16_OPSET:
        opset = BF16_OPSET  # Conv and friends accept bfloat16 only from opset 22
    for item in memory_overrides or []:
        if not item.startswith("memory."):
            raise ExportError(f"only memory.* settings can change at export time, got {item!r}")
    model, config, directory = load_for_export(checkpoint, memory_overrides)
    layout = MemoryLayout.of(config, model.memory_model is not None)
    wrappers = build_wrappers(model, layout, dtype)
    if graphs is not None:
        unknown = set(graphs) - set(wrappers)
        if unknown:
            raise ExportError(f"unknown graphs {sorted(unknown)}; this checkpoint has {sorted(wrappers)}")
        wrappers = {k: w for k, w in wrappers.items() if k in graphs}
    inputs = example_inputs(config, layout, dtype)

    out = Path(out)
    staging = Path(str(out) + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    entries = {}
    for name, module in wrappers.items():
        start = time.perf_counter()
        path = staging / f"{name}.onnx"
        export_graph(module, inputs[name], OUTPUTS[name], path, opset)
        extra = sorted(p.name for p in staging.glob(f"{name}.onnx.*"))
        entries[name] = {"file": path.name, "sha256": sha256_file(path), "external_data": extra, **graph_io(path)}
        if progress:
            progress(f"{name}: {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s")
    manifest = {
        "format": FORMAT,
        "precision": precision,
        "opset": opset,
        "checkpoint": {"path": str(Path(directory).resolve()), **checkpoint_hash(directory)},
        "config": config.to_dict(),
        "memory": vars(layout),
        "versions": tool_versions(),
        "prompts": save_prompts(model, staging),
        "graphs": entries,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_manifest(staging, manifest)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return manifest
