"""A session that runs exported graphs (ONNX Runtime or TensorRT) with the host logic of Rollout.

The host side is PyTorch's own: a `KVMemory` (tensors on the runtime's device), the same
`MemoryStrategy` (which slots to attend, which to overwrite, which frames to keep) and the same
few-step sampler (`denoise_block`) fed by the same seeded generator, so a session here follows
the PyTorch backend step for step. Only the networks are graphs. Each graph has fixed input and
output buffers, bound once (IO binding / tensor addresses), so tensors stay on the device:

    per block:  gather attended slots -> memory_k/v/valid buffers (padded with invalid slots)
                4 x generator_step  ->  memory_write (-> a checked write plan)  ->  decoder
                ->  KVMemory.commit of the plan

A runner with `prefix_memory` (the cudagraph backend) gets no padding: the gathered slots are
the first n of the buffers, and each graph that reads memory is bound once per n = 0..S over the
views memory_k[:, :, :n] (one CUDA graph each, made by `prepare`), so attention never needs a
mask and takes the fused kernels. The variants of one graph share its other buffers.

A step is split so that graph_batch.py can run the network passes of several sessions at once:
`begin_step` checks the input and picks the slots to attend (nothing changes), the network
passes make the block and the planned memory write (`_plan_write`: checked, not stored), the
block is decoded, and only then `finish_step` stores the write and advances the frame counter.
A step that fails anywhere before `finish_step` leaves the session as it was (its noise stream
is restored too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from export.manifest import ExportError
from runtime.backends.base import Backend, EngineSession
from worldmodel.config import WorldModelConfig, apply_overrides
from worldmodel.diffusion.flow_matching import step_sigmas
from worldmodel.diffusion.sampler import denoise_block
from worldmodel.memory import KVMemory, make_strategy
from worldmodel.memory.kv_memory import WritePlan
from worldmodel.rollout import Rollout

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "int64": torch.int64, "int32": torch.int32, "bool": torch.bool, "uint8": torch.uint8}


MEMORY_INPUTS = ("memory_k", "memory_v", "memory_valid")


class GraphRunner(Protocol):
    """What a backend provides: graphs that read and write caller-owned device buffers.

    A runner may also set `prefix_memory = True`: its graphs ignore memory_valid and take memory
    inputs that hold only slots with data (see the module docstring)."""

    device: torch.device

    def bind(self, graph: str, tensors: dict[str, torch.Tensor]) -> Callable[[], None]:
        """Bind every input and output of `graph` to the given tensors (by name); returns a call
        that runs the graph on them. Buffers must stay alive and in place while bound.

        A runner that captures graphs also has `new_pool()`, and its bind takes `pool=`: the
        session makes one pool and binds all its graphs into it."""


def allocate(entry: dict, shared: dict[str, torch.Tensor], device: torch.device) -> tuple[dict, dict]:
    """(inputs, outputs) buffers of a manifest graph entry, by name; names in `shared` (the
    memory inputs, one buffer for every graph that reads memory) are taken from it."""
    def alloc(spec):
        if spec["name"] in shared:
            return shared[spec["name"]]
        return torch.zeros(spec["shape"], dtype=TORCH_DTYPES[spec["dtype"]], device=device)

    return {s["name"]: alloc(s) for s in entry["inputs"]}, {s["name"]: alloc(s) for s in entry["outputs"]}


class Bindings:
    """The graphs of one set of buffers (io: graph -> (inputs, outputs) by name), each bound on
    first use, and kept, per (graph, n): a graph that reads memory and is asked for n held slots
    reads the first n slots of `memory` (memory_k/v [L, b, S, N, H, D] -> [:, :, :n],
    memory_valid [S] -> [:n]); n None, or a graph that does not read memory: the buffers whole."""

    def __init__(self, runner: GraphRunner, io: dict, memory: dict[str, torch.Tensor], pool=None):
        self.runner, self.io, self.memory, self.pool = runner, io, memory, pool
        self.bound: dict[tuple[str, int | None], BoundGraph] = {}

    def get(self, name: str, n: int | None) -> BoundGraph:
        inputs, outputs = self.io[name]
        n = n if "memory_k" in inputs else None
        if (name, n) not in self.bound:
            if n is not None:
                inputs = {**inputs, **{k: v[:, :, :n] if v.dim() > 1 else v[:n] for k, v in self.memory.items()}}
            self.bound[(name, n)] = BoundGraph(self.runner, name, inputs, outputs, self.pool)
        return self.bound[(name, n)]


class BoundGraph:
    """A graph bound to its input/output buffers, and the call that runs it."""

    def __init__(self, runner: GraphRunner, name: str, inputs: dict[str, torch.Tensor],
                 outputs: dict[str, torch.Tensor], pool=None):
        self.inputs, self.outputs = inputs, outputs
        tensors = {**inputs, **outputs}
        self.run = runner.bind(name, tensors) if pool is None else runner.bind(name, tensors, pool=pool)

    def __call__(self, **feeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Copy `feeds` into the input buffers (casting), run, return the output buffers (reused
        by the next call: clone what must outlive it)."""
        for name, value in feeds.items():
            if name in self.inputs:  # an input the exporter dropped as unused is not fed
                self.inputs[name].copy_(value)
        self.run()
        return self.outputs


@dataclass
class StepInput:
    """One session's step, checked and planned by `GraphSession.begin_step`; nothing has run.

    actions [1, Bf, A] float32 on the device; poses [1, Bf, pose_dim] float32 on the host or
    None; prompt [1, Lp, Dt] float32 on the device or None (a network without cross-attention);
    slots [n] int64: the memory slots to attend, in the order they are gathered (every one holds
    data). Bf = block_frames, A = action_dim, Lp/Dt = prompt tokens/width."""

    actions: torch.Tensor
    poses: torch.Tensor | None
    prompt: torch.Tensor | None
    slots: np.ndarray

    @property
    def held(self) -> int:
        """n: the number of slots the step attends (which graph variant it needs)."""
        return len(self.slots)


class GraphSession(EngineSession):
    # graph_batch.GraphBatches of this session's plan, where its steps may run batched (set by
    # the cudagraph backend; None: always alone)
    batches = None

    def __init__(self, runner: GraphRunner, manifest: dict, prompts: dict[str, torch.Tensor],
                 strategy=None, capacity=None, attention_budget=None, seed: int = 0):
        self.manifest = manifest
        exported = manifest["memory"]
        overrides = [f"memory.{k}={v}" for k, v in (("strategy", strategy), ("capacity_frames", capacity),
                                                      ("attention_budget", attention_budget)) if v]
        config = apply_overrides(WorldModelConfig.from_dict(manifest["config"]), overrides)
        self.cfg = config.model
        self.strategy = make_strategy(config.memory, self.cfg.block_frames)
        self._check_layout(exported, config)
        self.batch = 1
        self.device = runner.device
        step_inputs = {s["name"]: s for s in manifest["graphs"]["generator_step"]["inputs"]}
        self.memory_inputs = {
            name: torch.zeros(step_inputs[name]["shape"], dtype=TORCH_DTYPES[step_inputs[name]["dtype"]],
                              device=self.device)
            for name in ("memory_k", "memory_v", "memory_valid")
        }
        self.runner = runner
        self.pool = runner.new_pool() if hasattr(runner, "new_pool") else None  # this session's graphs only
        self.prefix = bool(getattr(runner, "prefix_memory", False))
        self.io = {name: allocate(entry, self.memory_inputs, self.device) for name, entry in manifest["graphs"].items()}
        self.bindings = Bindings(runner, self.io, self.memory_inputs, self.pool)
        self.held = 0  # slots gathered into the memory inputs (the first `held` of them)
        self.slots = exported["slots"]
        self.memory = KVMemory(self.cfg, config.memory.capacity_frames, 1, self.memory_inputs["memory_k"].dtype,
                               self.device)
        self.prompts = {k: v.to(self.device) for k, v in prompts.items()}
        self.sigmas = step_sigmas(config.sampler)
        if config.sampler.action_guidance != 1.0:
            raise ValueError(f"sampler.action_guidance {config.sampler.action_guidance}: the exported graphs run one "
                             "pass per step; serve this bundle with --backend torch, or set it to 1")
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._next_frame = 0

    def graph(self, name: str, held: int | None = None) -> BoundGraph:
        """Graph `name` bound for the memory as gathered now (or for `held` slots), bound on
        first use: with a prefix-memory runner one binding (one CUDA graph) per number of held
        slots, over views of the shared memory buffers; otherwise one binding."""
        return self.bindings.get(name, (self.held if held is None else held) if self.prefix else None)

    def prepare(self) -> None:
        """Bind (capture) every graph for every number of held slots now, so that no block of
        the session pays for a capture later."""
        for name in self.io:
            for n in (range(self.slots + 1) if self.prefix else [None]):
                self.graph(name, n)

    def _check_layout(self, exported: dict, config: WorldModelConfig) -> None:
        """The graphs were made for one strategy and S attended slots: refuse what they cannot run."""
        s = self.strategy
        made_for = make_strategy(WorldModelConfig.from_dict(self.manifest["config"]).memory, self.cfg.block_frames)
        if s.kept_frames() != made_for.kept_frames() or s.writer != made_for.writer:
            raise ExportError(
                f"this export was made for memory strategy {made_for.name!r}; strategy {s.name!r} keeps other "
                f"frames or is written by another network: export again with --strategy {s.name}"
            )
        mem = config.memory
        attended = s.steady_slots(mem.capacity_frames)  # as MemoryLayout.of counts S
        if s.kept_frames() and attended > exported["slots"]:
            what = "attention_budget" if s.name == "mag" else "capacity"
            raise ExportError(
                f"the graphs attend to {exported['slots']} memory slots, this session asks for {what} {attended}: "
                f"export again with --{what.replace('_', '-')} {attended}"
            )

    # ------------------------------------------------------------------ EngineSession

    @property
    def next_frame(self) -> int:
        return self._next_frame

    def reset(self) -> None:
        self.memory.clear()
        self._next_frame = 0

    @torch.no_grad()
    def step(self, actions, poses, scene):
        return self.run_step(self.begin_step(actions, poses, scene))

    def begin_step(self, actions, poses=None, scene=None) -> StepInput:
        """Check a step's input and choose the slots it attends; raises ValueError (bad input)
        or ExportError (a memory these graphs cannot read) with nothing changed."""
        actions, poses = self._check(actions, poses)
        prompt = self._prompt("generator", scene)
        query = Rollout._query_pose(poses) if self.retrieval else None
        return StepInput(actions, poses, prompt, self._slot_indices(self.strategy.attend_slots(self.memory, query)))

    @torch.no_grad()
    def run_step(self, step: StepInput) -> np.ndarray:
        """The block of a begun step, alone: frames [Bf, H, W, 3] uint8. On any failure the
        session is left as it was, noise stream included."""
        rng = self.generator.get_state()
        try:
            x0, plan = self._generate(step)
            frames = self._decode(x0)
        except BaseException:
            self.generator.set_state(rng)
            raise
        self.finish_step(plan)
        return frames

    @torch.no_grad()
    def generate_latents(self, actions, poses=None, scene=None) -> torch.Tensor:
        """The next block's clean latents [1, B, C, h, w] (memory written, nothing decoded)."""
        x0, plan = self._generate(self.begin_step(actions, poses, scene))
        self.finish_step(plan)
        return x0

    def _generate(self, step: StepInput) -> tuple[torch.Tensor, WritePlan | None]:
        """Noise, gather, 4 denoising passes and the memory-write pass: (x0 [1, Bf, C, h, w],
        the checked write of its kept frames or None). Memory and frame counter untouched."""
        cfg = self.cfg
        shape = (1, cfg.block_frames, cfg.latent_channels, cfg.latent_height, cfg.latent_width)
        noise = torch.randn(shape, generator=self.generator, device=self.device)
        pos = self._positions()
        self._gather(step.slots)
        x0 = self._denoise("generator_step", noise, step.actions, pos, step.prompt)
        return x0, self._write_pass(x0, step.actions, pos, step.poses)

    def finish_step(self, plan: WritePlan | None) -> None:
        """Store a step's checked memory write (cannot fail) and advance to the next block."""
        if plan is not None:
            self.memory.commit(plan)
        self._next_frame += self.cfg.block_frames

    @torch.no_grad()
    def observe(self, frames, actions, poses):
        bf = self.cfg.block_frames
        n = len(frames)
        if n == 0 or n % bf:
            raise ValueError(f"observe needs a whole number of blocks of {bf} frames, got {n}")
        for i in range(0, n, bf):
            a, p = self._check(actions[i:i + bf][None], None if poses is None else poses[i:i + bf][None])
            latents = self.graph("encoder")(frames=torch.from_numpy(np.ascontiguousarray(frames[i:i + bf])))["latents"]
            self._gather(self.strategy.attend_slots(self.memory, Rollout._query_pose(p) if self.retrieval else None))
            self.finish_step(self._write_pass(latents.float()[None], a, self._positions(), p))

    @torch.no_grad()
    def decode_slot(self, slot):
        # As worldmodel.rollout.decode_slot_latents: denoise the block ending at the slot's frame
        # from noise, seeing only the memory up to that slot, by the network that wrote the memory.
        memory, cfg = self.memory, self.cfg
        if not 0 <= slot < memory.capacity or memory.frame[slot] < 0:
            raise ValueError(f"slot {slot} holds nothing (used slots: {memory.used_slots().tolist()})")
        frame = int(memory.frame[slot])
        earlier = [s for s in memory.used_slots() if memory.frame[s] <= frame]
        self._gather(earlier[-self.strategy.cfg.attention_budget:])
        bf = cfg.block_frames
        pos = torch.arange(frame - bf + 1, frame + 1, device=self.device)
        actions = torch.zeros(1, bf, cfg.action_dim, device=self.device)
        by_memory_model = self.strategy.writer == "memory_model" and "memory_step" in self.io
        graph, net = ("memory_step", "memory_model") if by_memory_model else ("generator_step", "generator")
        noise = torch.randn((1, bf, cfg.latent_channels, cfg.latent_height, cfg.latent_width),
                            generator=self.generator, device=self.device)
        return self._decode(self._denoise(graph, noise, actions, pos, self._prompt(net, None)))

    def memory_state(self):
        mem = self.memory
        state = mem.state()
        state["full_cache_bytes"] = self._next_frame * mem.bytes_per_slot
        state["strategy"] = self.strategy.name
        state["frames_per_slot"] = self.strategy.frames_per_slot
        state["slots"] = [
            {"slot": int(s), "frame": int(mem.frame[s]), "pose": mem.pose[0, s].tolist()} for s in mem.used_slots()
        ]
        return state

    # ------------------------------------------------------------------ internals

    def _check(self, actions, poses):
        # The same validation as the PyTorch loop (it reads only batch, cfg and device).
        actions = torch.as_tensor(np.asarray(actions, dtype=np.float32))
        actions = actions[None] if actions.dim() == 2 else actions
        if poses is not None:
            poses = torch.as_tensor(np.asarray(poses, dtype=np.float32))
            poses = poses[None] if poses.dim() == 2 else poses
        return Rollout._check(self, actions, poses)

    def _positions(self) -> torch.Tensor:
        return torch.arange(self._next_frame, self._next_frame + self.cfg.block_frames, device=self.device)

    def _prompt(self, net: str, scene) -> torch.Tensor | None:
        null = self.prompts.get(f"{net}.null")
        if null is None:
            return None
        table = self.prompts.get(f"{net}.scenes")
        if scene is None or int(scene) < 0 or table is None:
            return null[None]
        if int(scene) >= len(table):
            raise ValueError(f"scene id out of range: max is {len(table) - 1}, got {int(scene)}")
        return table[int(scene)][None]

    def _slot_indices(self, slots) -> np.ndarray:
        """The slots to gather: `slots` (None = every held slot, in slot order as KVMemory.view()
        gives them) as indices [n], checked against what the graphs can take."""
        idx = np.flatnonzero(self.memory.frame >= 0) if slots is None else np.asarray(slots, dtype=np.int64)
        if len(idx) > self.slots:
            raise ExportError(f"{len(idx)} slots to attend, the graphs take {self.slots}")
        if self.prefix and len(idx) and (self.memory.frame[idx] < 0).any():
            raise ExportError("an attended slot holds no data; graphs made for held slots only cannot mask it")
        return idx

    def _gather(self, slots) -> None:
        """Fill the fixed-size memory inputs with the attended slots (as `_slot_indices`),
        padded with invalid slots; every graph that reads memory shares these buffers."""
        idx = self._slot_indices(slots)
        n = len(idx)
        buf = self.memory_inputs
        valid = gather_slots(self.memory, idx, buf["memory_k"][:, :, :n], buf["memory_v"][:, :, :n])
        buf["memory_valid"].zero_()
        buf["memory_valid"][:n].copy_(valid)
        self.held = n

    def _denoise(self, graph: str, noise, actions, pos, prompt) -> torch.Tensor:
        step = self.graph(graph)
        feeds = {"actions": actions[None] if actions.dim() == 2 else actions, "frame_pos": pos}
        if prompt is not None:
            feeds["prompt"] = prompt

        def velocity(x, s):
            return step(x_t=x, sigma=s[0, :1], **feeds)["v"].float().clone()

        return denoise_block(velocity, noise, self.sigmas, self.generator)

    def _write_pass(self, x0, actions, pos, poses) -> WritePlan | None:
        """The memory-write pass over a finished block x0 [1, Bf, C, h, w] and its planned,
        checked write (None where the strategy keeps nothing); nothing is stored yet."""
        if not self.strategy.kept_frames():
            return None
        out = self.graph("memory_write")(x0=x0, actions=actions, frame_pos=pos)
        return self._plan_write(out["k_new"], out["v_new"], poses)

    def _plan_write(self, k_new, v_new, poses) -> WritePlan:
        """The write of this block's kept frames, k_new/v_new [L, 1, K, N, H, D] (read when it is
        committed: keep them in place until then), into the slots the strategy chooses; checked
        (KVMemoryError on NaN, no room...) but not stored. Also what graph_batch.py calls with
        its batch row of the write pass's outputs."""
        keep = self.strategy.kept_frames()
        # from the host's own counter: reading the positions back would wait for the device
        frames = np.arange(self._next_frame, self._next_frame + self.cfg.block_frames)[keep]
        p = None if poses is None else poses.numpy()[:, keep]
        slots, sink = self.strategy.choose_slots(self.memory, frames)
        return self.memory.check_write(slots, k_new, v_new, frames, p, sink)

    def _decode(self, x0) -> np.ndarray:
        return self.graph("decoder")(latents=x0[0])["frames"].cpu().numpy().copy()


def gather_slots(memory: KVMemory, idx: np.ndarray, k_out: torch.Tensor, v_out: torch.Tensor) -> torch.Tensor:
    """Copy the K/V of slots `idx` [n] of a batch-1 `memory` into k_out/v_out [L, 1, n, N, H, D]
    (a session's memory inputs, or its row of a batch's: graph_batch.py); returns their
    validity [n] bool (on the device)."""
    view = memory.view(idx)
    k_out.copy_(view.k)
    v_out.copy_(view.v)
    return view.valid


class GraphBackend(Backend):
    """Shared by the ONNX Runtime and TensorRT backends: a manifest, prompt tables and a runner."""

    def __init__(self, runner: GraphRunner, manifest: dict, export_dir: str | Path):
        from safetensors.torch import load_file

        from export.manifest import ExportError
        from worldmodel.train.safetensors_header import read_header

        try:
            config = WorldModelConfig.from_dict(manifest["config"])
        except (ValueError, TypeError) as e:
            raise ExportError(f"{Path(export_dir) / 'manifest.json'}: config: {e}") from None
        super().__init__(config)
        self.runner = runner
        self.manifest = manifest
        self.export_dir = Path(export_dir)
        self.prompts = {}
        if manifest.get("prompts"):
            prompts = self.export_dir / Path(manifest["prompts"]).name  # never a path outside the export
            read_header(prompts)  # a damaged file: one line naming it (DamagedFile), not the library's error
            self.prompts = load_file(str(prompts))

    def bytes_per_slot(self) -> int:
        m = self.config.model
        spec = {s["name"]: s for s in self.manifest["graphs"]["generator_step"]["inputs"]}["memory_k"]
        itemsize = torch.finfo(TORCH_DTYPES[spec["dtype"]]).bits // 8
        return 2 * m.layers * m.tokens_per_frame * m.dim * itemsize

    def new_session(self, strategy=None, capacity=None, attention_budget=None, seed=0):
        return GraphSession(self.runner, self.manifest, self.prompts, strategy, capacity, attention_budget, seed)


def export_cache(directory=None) -> Path:
    """Where exports made on first use live: `directory` (`magworld serve --export-cache`), else
    $MAGWORLD_CACHE/exports, else ~/.cache/magworld/exports."""
    import os

    if directory is not None:
        return Path(directory)
    return Path(os.environ.get("MAGWORLD_CACHE", Path.home() / ".cache" / "magworld")) / "exports"


def resolve_export(path, export_dir=None, precision: str = "fp32", cache=None) -> tuple[Path, dict]:
    """(export directory, manifest) for a backend.

    `path` is an export directory (it holds manifest.json; checked against its checkpoint when that
    still exists where it was), or a checkpoint directory: then `export_dir` if given, else an
    export in the cache (`export_cache(cache)`) keyed by the checkpoint's hash and the precision,
    made here on first use; the cache's path is printed either way, so it is never a surprise. Raises StaleExportError when the export was made from another checkpoint.
    """
    import sys

    from export.manifest import MANIFEST_FILE, checkpoint_hash, load_manifest, verify_checkpoint
    from export.onnx_export import export_onnx, parse_precision
    from worldmodel.train.checkpoint import resolve_checkpoint

    path = Path(path)
    if export_dir is None and (path / MANIFEST_FILE).is_file():
        manifest = load_manifest(path)
        recorded = Path(manifest["checkpoint"]["path"])
        if (recorded / "config.json").is_file():
            verify_checkpoint(manifest, recorded)
        return path, manifest
    checkpoint = resolve_checkpoint(path)
    if export_dir is None:
        parse_precision(precision)
        export_dir = export_cache(cache) / f"{checkpoint_hash(checkpoint)['sha256'][:16]}-{precision}"
        choose = "--export-cache DIR or $MAGWORLD_CACHE chooses where"
        if not (export_dir / MANIFEST_FILE).is_file():
            print(f"exporting {checkpoint} to {export_dir} ({precision}, first use; {choose})", file=sys.stderr)
            export_onnx(checkpoint, export_dir, precision)
        else:
            print(f"using the export of {checkpoint} cached in {export_dir} ({choose})", file=sys.stderr)
    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    verify_checkpoint(manifest, checkpoint)
    return export_dir, manifest
