"""Several sessions' steps as one pass of batch-b graphs (the cudagraph backend's `step_many`).

Why: at the Doom sizes one session's block is six graph replays (4 denoising passes, the memory
write, the decoder) that leave an H200 mostly idle, so 8 clients stepped one after another get
about what one gets (251 frames/s against 227). The same replays over 8 sessions' rows cost
little more than over one.

What runs together: sessions of one plan (the same runner: networks, strategy layout, S attended
slots; CudaGraphBackend.plan) whose steps attend the same number n of slots, which is every
session in the steady state (`mag`: its budget, n = S). Each session keeps its own host logic exactly
as alone (graph_session.py): its own input checks and slot choice (`begin_step`), its own noise
from its own seeded generator, its own strategy's slot choice and checked write (`_plan_write`),
its own frame counter (`finish_step`). Only the network passes are shared:

    per session:  begin_step -> StepInput (checked, slots chosen; nothing changed)
    the batch:    gather each session's slots into its row -> 4 x generator_step
                  -> memory_write -> each session plans its write from its row (checked)
                  -> decoder -> frames to the host
    per session:  finish_step (commit the write, advance): only once every step above succeeded

Buffers of a batch of size b (shapes; row i is the group's i-th session, rows past the group are
padding). Bf = block_frames, C/h/w the latent, L layers, S slots, N tokens a frame, H heads,
D head_dim, K kept frames, A = action_dim, Lp/Dt prompt tokens/width:

    x_t, x0, v          [b, Bf, C, h, w]   the plan's dtype        (generator_step: in x_t, out x0 v)
    sigma               [1]                float32, shared by every row
    actions             [b, Bf, A]         one buffer for generator_step and memory_write
    frame_pos           [b, Bf]            int64, each row its own frames (own RoPE: wrappers.positions)
    prompt              [b, Lp, Dt]        where the generator has cross-attention
    memory_k/v          [L, b, S, N, H, D] the graph for n reads [:, :, :n]
    memory_valid        [S]                bool, all True and not read (prefix memory)
    x0 -> k_new/v_new   [L, b, K, N, H, D] (memory_write)
    latents -> frames   [b*Bf, C, h, w] -> [b*Bf, H, W, 3] uint8 (decoder)

Padding rows hold what they held (zeros, or an earlier pass's finite data); every op of these
networks is per sample, so a padding row costs time and never changes another row.

Batch sizes: powers of two up to `max_batch` (8 by default; and `max_batch` itself if it is no
power of two). A group of k sessions runs in the smallest size >= k (3 -> 4, 5 -> 8; a larger
group in chunks of the largest). Powers of two keep the graphs and buffers to log2(max) sizes
per (graph, n) where one size per k would be max - 1; at these sizes a padding row is nearly
free, since a pass costs its launches, not its rows. On CUDA only the sizes whose buffers fit in
a quarter of the free device memory are used (a Wan-size memory is gigabytes a row).

Captures: `GraphBatches.prepare` captures every batched graph at the steady state (the n of
every block once a session's memory has filled: S for `mag` and `full`, sinks + window for
`window`; MemoryStrategy.steady_slots) for every batch size when the plan's first session starts
(CudaGraphBackend.new_session; under `magworld serve` that is the warm-up session, before any
client). A group at another n (sessions still filling their memory that happen to step
together) captures its graphs at first use, once per (graph, n, b) for the backend's life: the
graphs belong to the plan, not to a session, so a later session at that n finds them made.
Capture on the CPU is nothing (the runner calls the modules eagerly over the same buffers),
which is what the CPU tests check.

Failure: everything before the commits is checked or computed without touching a session (the
noise streams are saved first and restored on failure), so a batch that fails leaves every
session in it as it was; the backend then steps each one alone, so one session's bad write
fails only that session.
"""

from __future__ import annotations

import numpy as np
import torch

from runtime.backends.graph_session import TORCH_DTYPES, BoundGraph, Bindings, GraphSession, StepInput, gather_slots
from worldmodel.config import WorldModelConfig
from worldmodel.diffusion.sampler import denoise_block
from worldmodel.memory import make_strategy

BATCHED = ("generator_step", "memory_write", "decoder")  # the graphs of a step (memory_step, encoder: alone)
MAX_BATCH = 8
ROWS = {"frame_pos": "new", "latents": "frames", "frames": "frames", "sigma": None, "memory_valid": None,
        "memory_k": 1, "memory_v": 1, "k_new": 1, "v_new": 1}  # else axis 0; how each name takes b rows


def batched_shape(name: str, shape: list[int], b: int) -> list[int]:
    """A batch-1 graph input/output shape (the manifest's) for b sessions (module docstring)."""
    rows = ROWS.get(name, 0)
    if rows is None:
        return list(shape)
    if rows == "new":
        return [b, *shape]
    if rows == "frames":
        return [b * shape[0], *shape[1:]]
    if shape[rows] != 1:
        raise ValueError(f"{name} {shape}: expected batch 1 on axis {rows}")
    return [*shape[:rows], b, *shape[rows + 1:]]


def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """Powers of two from 2 up to max_batch, and max_batch (none below 2: no batching)."""
    sizes = {2 ** i for i in range(1, max_batch.bit_length()) if 2 ** i <= max_batch}
    return tuple(sorted(sizes | ({max_batch} if max_batch >= 2 else set())))


class GraphBatch:
    """The buffers of one batch size b of one plan and its graphs bound over them, by (graph, n)."""

    def __init__(self, runner, manifest: dict, b: int, pool):
        self.runner, self.b, self.pool = runner, b, pool
        device = runner.device
        shared: dict[tuple, torch.Tensor] = {}  # the inputs two graphs take alike (actions, frame_pos, memory)

        def buffer(spec, share: bool):
            shape = batched_shape(spec["name"], spec["shape"], b)
            key = (spec["name"], tuple(shape), spec["dtype"])
            if share and key in shared:
                return shared[key]
            t = torch.zeros(shape, dtype=TORCH_DTYPES[spec["dtype"]], device=device)
            if share:
                shared[key] = t
            return t

        self.io = {}
        for name in BATCHED:
            entry = manifest["graphs"].get(name)
            if entry is not None:
                self.io[name] = ({s["name"]: buffer(s, True) for s in entry["inputs"]},
                                 {s["name"]: buffer(s, False) for s in entry["outputs"]})
        self.memory = {k: v for k, v in self.io["generator_step"][0].items() if k.startswith("memory_")}
        self.memory["memory_valid"].fill_(True)
        self.bindings = Bindings(runner, self.io, self.memory, pool)  # kept for the plan's life (see GraphBatches)
        self.failed: set[tuple[str, int | None]] = set()

    def graph(self, name: str, n: int | None) -> BoundGraph:
        """Graph `name` for n held slots (the decoder: any n), bound (captured) on first use. A
        binding that failed (a capture out of memory, say) is not tried again: its groups step
        alone rather than pay for a failing capture at every block."""
        key = (name, n if "memory_k" in self.io[name][0] else None)
        if key in self.failed:
            raise RuntimeError(f"graph {name} for {n} slots at batch {self.b} could not be bound before")
        try:
            return self.bindings.get(name, n)
        except Exception:
            self.failed.add(key)
            raise

    def run(self, sessions: list[GraphSession], steps: list[StepInput]) -> tuple[list[np.ndarray], list]:
        """The blocks of k <= b begun steps that attend the same n slots: (frames [Bf, H, W, 3]
        uint8 per session, each one's checked write plan or None). Changes no session (the
        caller has saved their noise streams: this draws from them)."""
        k, n = len(sessions), steps[0].held
        first = sessions[0]
        cfg, device = first.cfg, first.device
        bf = cfg.block_frames
        step_graph = self.graph("generator_step", n)
        ins = step_graph.inputs
        for i, (s, st) in enumerate(zip(sessions, steps)):
            gather_slots(s.memory, st.slots, self.memory["memory_k"][:, i:i + 1, :n],
                         self.memory["memory_v"][:, i:i + 1, :n])
        ins["actions"][:k].copy_(torch.cat([st.actions for st in steps]))
        pos = np.stack([np.arange(s.next_frame, s.next_frame + bf) for s in sessions])
        ins["frame_pos"][:k].copy_(torch.from_numpy(pos))  # from the host counters: no device read
        if "prompt" in ins:
            ins["prompt"][:k].copy_(torch.cat([st.prompt for st in steps]))
        shape = (1, bf, cfg.latent_channels, cfg.latent_height, cfg.latent_width)
        noise = torch.cat([torch.randn(shape, generator=s.generator, device=device) for s in sessions])
        x_t, sigma, v = ins["x_t"], ins["sigma"], step_graph.outputs["v"]

        def velocity(x, s_t):
            x_t[:k].copy_(x)
            sigma.copy_(s_t[0, :1])
            step_graph.run()
            return v[:k].float().clone()

        x0 = denoise_block(velocity, noise, first.sigmas, [s.generator for s in sessions])
        plans: list = [None] * k
        if "memory_write" in self.io:
            write = self.graph("memory_write", n)
            write.inputs["x0"][:k].copy_(x0)
            write.run()
            k_new, v_new = write.outputs["k_new"], write.outputs["v_new"]
            # each plan reads its row when committed: no graph of this batch writes k_new/v_new before then
            plans = [s._plan_write(k_new[:, i:i + 1], v_new[:, i:i + 1], st.poses)
                     for i, (s, st) in enumerate(zip(sessions, steps))]
        decoder = self.graph("decoder", None)
        decoder.inputs["latents"][:k * bf].copy_(x0.flatten(0, 1))
        decoder.run()
        out = decoder.outputs["frames"][:k * bf].to("cpu", copy=True).numpy()  # a copy on the CPU too: the buffer is reused
        return [out[i * bf:(i + 1) * bf] for i in range(k)], plans


class GraphBatches:
    """The batched graphs of one plan (one runner and manifest), at every batch size.

    Graph memory pool: one, made here and owned by this object, which the backend keeps as long
    as it keeps the plan (CudaGraphBackend.plans: for the backend's life). Every batched graph of
    the plan is captured into it and kept (GraphBatch.bindings) until this object goes; so each
    capture into the pool happens while every graph captured into it before is alive. PyTorch
    asserts on the other case, a capture into a pool whose graphs have all been freed while its
    blocks are not yet returned (what one pool shared by every session hit after serve's
    throwaway warm-up session: commit "cudagraph backend: one graph pool per session"). A
    session's own pool cannot hold these graphs: it dies with its session, and batched graphs
    serve every later session of the plan. When this object goes, its graphs and the pool handle
    go together and the handle is never captured into again. Graphs of different b and n share
    the pool safely: they replay one after another on one stream, and no output lives in the pool
    (every output is a buffer of GraphBatch, allocated outside any capture).
    """

    def __init__(self, runner, manifest: dict, max_batch: int = MAX_BATCH):
        if not getattr(runner, "prefix_memory", False):
            raise ValueError("batched graphs need a prefix-memory runner (the cudagraph backend's)")
        self.runner, self.manifest = runner, manifest
        layout, config = manifest["memory"], WorldModelConfig.from_dict(manifest["config"])
        strategy = make_strategy(config.memory, config.model.block_frames)
        # n once a session's memory has filled (mag: the budget S; window: sinks + window)
        self.steady = min(layout["slots"], strategy.steady_slots(layout["capacity"]))
        self.pool = runner.new_pool() if hasattr(runner, "new_pool") else None
        self.sizes = self._fitting(batch_sizes(max_batch))
        self.batches: dict[int, GraphBatch] = {}

    def _fitting(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """The sizes whose buffers take at most a quarter of the free device memory (CUDA)."""
        if self.runner.device.type != "cuda":
            return sizes
        graphs = [self.manifest["graphs"][g] for g in BATCHED if g in self.manifest["graphs"]]
        row = sum(int(np.prod(batched_shape(s["name"], s["shape"], 1))) * TORCH_DTYPES[s["dtype"]].itemsize
                  for entry in graphs for s in entry["inputs"] + entry["outputs"])  # bytes a row (shared ones counted twice)
        free = torch.cuda.mem_get_info(self.runner.device)[0]
        return tuple(b for b in sizes if b * row <= free // 4)

    @property
    def largest(self) -> int:
        return max(self.sizes, default=1)

    def batch(self, k: int) -> GraphBatch:
        """The batch of the smallest size that holds k sessions (made on first use)."""
        b = min(s for s in self.sizes if s >= k)
        if b not in self.batches:
            self.batches[b] = GraphBatch(self.runner, self.manifest, b, self.pool)
        return self.batches[b]

    def prepare(self) -> None:
        """Capture every batched graph at the steady state n = self.steady, at every size (see
        the module docstring); again later it captures nothing."""
        for b in self.sizes:
            batch = self.batch(b)
            for name in batch.io:
                batch.graph(name, self.steady)

    @torch.no_grad()
    def step(self, sessions: list[GraphSession], steps: list[StepInput]) -> list[np.ndarray]:
        """Step 2..largest distinct sessions of this plan whose begun steps attend the same n
        slots, as one batch: each session's frames [Bf, H, W, 3] uint8, each session's memory and
        frame counter as its own `run_step` leaves them. Raises with every session as it was."""
        if not 1 < len(sessions) <= self.largest:
            raise ValueError(f"a batch holds 2 to {self.largest} sessions, got {len(sessions)}")
        if (len({id(s) for s in sessions}) != len(sessions) or len({st.held for st in steps}) != 1
                or any(s.batches is not self for s in sessions)):
            raise ValueError("a batch needs distinct sessions of this plan that attend the same number of slots")
        rng = [s.generator.get_state() for s in sessions]
        try:
            frames, plans = self.batch(len(sessions)).run(sessions, steps)
        except BaseException:
            for s, state in zip(sessions, rng):
                s.generator.set_state(state)
            raise
        for s, plan in zip(sessions, plans):
            s.finish_step(plan)
        return frames
