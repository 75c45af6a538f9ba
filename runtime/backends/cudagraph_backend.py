"""The CUDA-graph backend: the PyTorch networks, each captured once as a CUDA graph and replayed.

Why: a small world model spends most of a block in Python and kernel launches, not in maths
(dozens of small kernels per layer, 5 network passes per block; docs/results.md, "Speed"). A CUDA
graph replays a whole network pass as one launch.

How: the same static-shape plan as the ONNX Runtime and TensorRT backends (graph_session.py: the
host keeps the slot table, the memory strategy and the few-step sampler; the networks read and
write fixed buffers), with PyTorch itself running the networks of export/wrappers.py:

    generator_step, memory_step   one denoising step of a block against S attended slots
    memory_write                  the clean pass -> K/V of the kept frames
    decoder, encoder              latents <-> uint8 frames

The graphs that read memory are captured once per number of held slots n = 0..S (S attended
slots), over the first n slots of the memory buffers: no slot a graph sees is empty, so
attention runs unmasked on SDPA's fused kernels (a boolean mask forces the slow ones), and the
graphs are made when a session starts (`GraphSession.prepare`), not in its first blocks.
Each session binds its own buffers, so each session captures its own graphs, into a graph memory
pool of its own (`TorchGraphRunner.new_pool`). One pool shared by all sessions would save memory,
but PyTorch refuses a capture into a pool whose graphs have all been freed and whose blocks are
not yet returned (an INTERNAL ASSERT in CUDACachingAllocator): `magworld serve` warms up on a
throwaway session, and the first client's capture then failed in the first `bench serve
--backend cudagraph` runs (session 9).

Batching (`step_many`, graph_batch.py): the steps of sessions of one plan that arrive together
and attend the same number of slots run as one pass of batch-b graphs, captured per plan (not
per session) into a pool of the plan's own; `max_batch=1` (`magworld serve --no-batching`)
steps every session alone and captures no batched graph.

Device placement is explicit: the networks, the wrappers' own buffers (MemoryWrite.keep_index)
and every buffer a graph reads are on the backend's device; host-side tensors (actions, poses
as given, frames out) cross only in the session, outside any capture. Nothing is exported to disk and nothing beyond
PyTorch is needed. On CPU the runner calls the same modules eagerly over the same buffers: that
is what the CPU tests compare with the plain PyTorch backend.
"""

from __future__ import annotations

import torch
from torch import nn

from export.onnx_export import OUTPUTS, MemoryLayout, build_wrappers, example_inputs, parse_precision, prompt_tables
from runtime.backends.base import Backend
from runtime.backends.graph_batch import MAX_BATCH, GraphBatches
from runtime.backends.graph_session import GraphSession
from worldmodel.bundle import WorldModel
from worldmodel.config import apply_overrides

# Eager calls on a side stream before a capture (lazy inits, cuBLAS workspaces, cuDNN plans):
# two before a graph's first capture, one before each further variant (a new memory size makes
# new attention plans, nothing else).
WARMUP_CALLS = 2


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class TorchGraphRunner:
    """Runs the wrapper modules over caller-owned buffers: captured as CUDA graphs on a CUDA
    device, called eagerly elsewhere. Implements graph_session.GraphRunner."""

    def __init__(self, modules: dict[str, nn.Module], inputs: dict[str, list[str]], device: torch.device):
        self.modules = modules
        self.inputs = inputs  # graph -> input names, in the module's argument order
        self.device = device
        self.capture = device.type == "cuda"
        self.captured = 0
        self.warmed: set[str] = set()

    prefix_memory = True  # the wrappers are built with all_valid=True (see graph_session.py)

    def new_pool(self):
        """A graph memory pool for one session's graphs (None where nothing is captured): its
        graphs replay one after another, so they can share it."""
        return torch.cuda.graph_pool_handle() if self.capture else None

    def bind(self, graph: str, tensors: dict[str, torch.Tensor], pool=None):
        module = self.modules[graph]
        args = [tensors[name] for name in self.inputs[graph]]
        outs = [tensors[name] for name in OUTPUTS[graph]]
        misplaced = [n for n, t in tensors.items() if t.device != self.device]
        if misplaced:
            raise ValueError(f"graph {graph}: buffers {misplaced} are not on {self.device}")

        def run_eager():
            with torch.no_grad():
                result = module(*args)
            for out, value in zip(outs, result if isinstance(result, tuple) else (result,)):
                out.copy_(value)

        if not self.capture:
            return run_eager
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(1 if graph in self.warmed else WARMUP_CALLS):
                run_eager()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.warmed.add(graph)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph, pool=pool):
            run_eager()
        self.captured += 1
        return cuda_graph.replay


def probe_manifest(model: WorldModel, layout: MemoryLayout, wrappers: dict[str, nn.Module], dtype: torch.dtype,
                   device: torch.device) -> tuple[dict, dict[str, list[str]]]:
    """The graphs' inputs and outputs as manifest entries (what `magworld export` writes), found by
    running each wrapper once on example inputs. Returns (graphs, input names per graph)."""
    examples = example_inputs(model.config, layout, dtype, device=device)
    graphs, names = {}, {}
    for name, module in wrappers.items():
        feeds = dict(examples[name])
        net = getattr(module, "model", None)
        if net is not None and not net.cfg.cross_attention:
            feeds.pop("prompt")  # as the ONNX exporter drops an unused input
            module = wrappers[name] = WithoutPrompt(module)
        feeds = {k: v.to(device) for k, v in feeds.items()}
        with torch.no_grad():
            result = module(*feeds.values())
        result = result if isinstance(result, tuple) else (result,)
        spec = [{"name": k, "shape": list(v.shape), "dtype": dtype_name(v.dtype)} for k, v in feeds.items()]
        out = [{"name": k, "shape": list(v.shape), "dtype": dtype_name(v.dtype)} for k, v in zip(OUTPUTS[name], result)]
        graphs[name] = {"inputs": spec, "outputs": out}
        names[name] = list(feeds)
    return graphs, names


class WithoutPrompt(nn.Module):
    """A denoising step of a network without cross-attention: no `prompt` input."""

    def __init__(self, step: nn.Module):
        super().__init__()
        self.step = step

    def forward(self, x_t, sigma, actions, frame_pos, memory_k, memory_v, memory_valid):
        return self.step(x_t, sigma, actions, frame_pos, None, memory_k, memory_v, memory_valid)


def compile_networks(model: WorldModel, mode: str = "default") -> str:
    """The generator's and memory model's token paths compiled by inductor, in place
    (worldmodel/model/fused.py says what is compiled, and why not the whole network: one capture
    per number of held slots). Compiling happens in the first warm-up call of the first graph,
    before any capture, so the captured graphs replay inductor's fused kernels; on CPU the eager
    calls run them. Returns the mode."""
    from worldmodel.model.fused import compile_token_paths

    for net in (model.generator, model.memory_model):
        if net is not None:
            compile_token_paths(net, mode)
    return mode


class CudaGraphBackend(Backend):
    """`checkpoint`: a checkpoint directory. precision: bf16 (default on CUDA), fp16 or fp32
    (default on CPU). Graphs are planned per memory layout (strategy, attended slots, kept
    frames): a session asking for another strategy or budget gets its own plan, made once.
    max_batch: the most sessions one batched pass steps (1: none is batched)."""

    name = "cudagraph"

    def __init__(self, checkpoint, device: str = "cuda", precision: str | None = None,
                 model: WorldModel | None = None, max_batch: int = MAX_BATCH, compile: bool = False,
                 compile_mode: str = "default"):
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("the cudagraph backend was asked to run on CUDA, but torch sees no CUDA device")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.precision = precision or ("bf16" if dev.type == "cuda" else "fp32")
        self.dtype = parse_precision(self.precision)
        self.model = model if model is not None else WorldModel.load(checkpoint, "cpu")
        super().__init__(self.model.config)
        for net in self.model.modules():
            net.to(device=dev, dtype=self.dtype).eval()
        self.device = dev
        # compile: the transformers' token paths compiled by inductor before any capture (compile_networks)
        self.compiled = compile_networks(self.model, compile_mode) if compile else None
        self.prompts = {k: v.to(dev) for k, v in prompt_tables(self.model).items()}
        self.plans: dict[tuple, tuple[dict, TorchGraphRunner]] = {}
        self.max_batch = max_batch
        self.batches_steps = max_batch > 1
        self.batches: dict[tuple, GraphBatches] = {}  # plan key -> its batched graphs (while batching)
        self.manifest, self.runner = self.plan()

    def plan(self, strategy=None, capacity=None, attention_budget=None) -> tuple[dict, TorchGraphRunner]:
        """(manifest, runner) for sessions with this memory layout; made on first use."""
        return self.plans[self._plan_key(strategy, capacity, attention_budget)]

    def _plan_key(self, strategy, capacity, attention_budget) -> tuple:
        """The key of the plan for this memory layout in self.plans, made here on first use."""
        overrides = [f"memory.{k}={v}" for k, v in (("strategy", strategy), ("capacity_frames", capacity),
                                                      ("attention_budget", attention_budget)) if v]
        config = apply_overrides(self.config, overrides)
        layout = MemoryLayout.of(config, self.model.memory_model is not None)
        key = (layout.strategy, layout.slots, tuple(layout.kept_frames), layout.writer)
        if key not in self.plans:
            wrappers = build_wrappers(self.model, layout, self.dtype, self.device, all_valid=True)
            graphs, inputs = probe_manifest(self.model, layout, wrappers, self.dtype, self.device)
            manifest = {"precision": self.precision, "config": config.to_dict(), "memory": vars(layout),
                        "graphs": graphs}
            runner = TorchGraphRunner(wrappers, inputs, self.device)
            self.plans[key] = (manifest, runner)
            if self.batches_steps:
                self.batches[key] = GraphBatches(runner, manifest, self.max_batch)
        return key

    def bytes_per_slot(self) -> int:
        m = self.config.model
        return 2 * m.layers * m.tokens_per_frame * m.dim * (torch.finfo(self.dtype).bits // 8)

    def new_session(self, strategy=None, capacity=None, attention_budget=None, seed=0):
        key = self._plan_key(strategy, capacity, attention_budget)
        manifest, runner = self.plans[key]
        session = GraphSession(runner, manifest, self.prompts, strategy, capacity, attention_budget, seed)
        session.batches = self.batches.get(key)
        if runner.capture:
            session.prepare()  # capture now: a capture inside a session's first blocks would show in its latency
            if session.batches is not None:
                session.batches.prepare()  # the plan's first session: its steady-state batches (then nothing)
        return session

    def step_many(self, sessions, actions, poses, scenes):
        """Each step is begun (checked, slots chosen) alone: a rejected input is that session's
        error. Then the begun steps of one plan that attend the same number of slots run as one
        batched pass (graph_batch.py; chunks of at most the largest batch size); a group of one,
        and every session of a batch that failed (each left as it was), steps alone."""
        out: list = [None] * len(sessions)
        sizes = [1] * len(sessions)
        groups: dict = {}
        seen: set[int] = set()
        for i, (s, a, p, scene) in enumerate(zip(sessions, actions, poses, scenes)):
            if id(s) in seen:  # a session twice: its second step begins once its first is done
                groups[("again", i)] = [(i, None)]
                continue
            seen.add(id(s))
            try:
                step = s.begin_step(a, p, scene)
            except Exception as e:  # reported per session by the caller
                out[i] = e
                continue
            groups.setdefault(("alone", i) if s.batches is None else (id(s.batches), step.held), []).append((i, step))
        for members in groups.values():
            batches = sessions[members[0][0]].batches
            largest = batches.largest if batches is not None else 1
            for chunk in (members[j:j + largest] for j in range(0, len(members), largest)):
                if len(chunk) > 1:
                    try:
                        frames = batches.step([sessions[i] for i, _ in chunk], [st for _, st in chunk])
                    except Exception:
                        pass  # every session of it as it was: each steps alone below
                    else:
                        for (i, _), f in zip(chunk, frames):
                            out[i], sizes[i] = f, len(chunk)
                        continue
                for i, step in chunk:
                    try:
                        out[i] = (sessions[i].run_step(step) if step is not None
                                  else sessions[i].step(actions[i], poses[i], scenes[i]))
                    except Exception as e:
                        out[i] = e
        self.last_pass_sizes = sizes
        return out
