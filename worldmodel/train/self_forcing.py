"""Self Forcing rollouts for training: the generator produces a video block by block from its
own outputs, with the KV memory written exactly as at inference.

Gradient flows only through one denoising step per block (the randomly chosen exit step);
earlier steps and the memory writes run without gradient, which keeps memory use flat in the
number of blocks.
"""

from __future__ import annotations

import numpy as np
import torch

from worldmodel.config import MemoryConfig
from worldmodel.memory import KVMemory, make_strategy
from worldmodel.model import CausalDiT
from worldmodel.train.distributed import same_on_all_ranks


def self_forcing_rollout(
    generator: torch.nn.Module,
    writer: CausalDiT,
    memory_cfg: MemoryConfig,
    model_cfg,
    context: torch.Tensor,
    actions: torch.Tensor,
    scenes: list[torch.Tensor],
    sigmas: list[float],
    pos0: int,
    autocast,
    writer_scene: torch.Tensor | None = None,
    grad: bool = True,
    history=None,
) -> torch.Tensor:
    """Generate len(scenes) blocks after `context`.

    generator: the (possibly DDP-wrapped) network being trained; writer: who computes the K/V
    stored after each block (the generator itself, or a frozen memory model).
    context [b, Fc, C, h, w] real latents written first (Fc a multiple of B);
    actions [b, Fc + n*B, A] for the whole video; scenes: one [b] scene-id tensor per generated
    block (-1 = empty); pos0: RoPE position of the first context frame.
    history: a `sub_history.SlotTable` of slots from before `context` (frames < pos0), written
    into the memory first: every block of the rollout attends to them (`mag` only).
    Returns generated latents [b, n*B, C, h, w] (with gradient through each block's exit step).
    """
    b, fc = context.shape[:2]
    bf = model_cfg.block_frames
    n = len(scenes)
    strategy = make_strategy(memory_cfg, bf)
    capacity = (fc + n * bf) if strategy.name != "mag" else (fc + n * bf) // bf
    held = 0 if history is None else history.slots
    if held and strategy.name != "mag":
        raise ValueError(f"a slot-table history is MAG's compressed memory; strategy {strategy.name!r} cannot hold it")
    # no finiteness check per write: it would wait for the GPU after every block
    memory = KVMemory(model_cfg, max(capacity + held, strategy.capacity_needed()), b, torch.float32, context.device,
                      check_values=False)
    if held:
        memory.write(range(held), history.k, history.v, history.frames)
    empty = torch.full((b,), -1, dtype=torch.long, device=context.device)
    wscene = empty if writer_scene is None else writer_scene

    def write(x, start, scene):
        pos = torch.arange(pos0 + start, pos0 + start + bf, device=x.device)
        t0 = torch.zeros(b, bf, device=x.device)
        with torch.no_grad(), autocast():
            _, kvs = writer(x, t0, actions[:, start:start + bf], pos, memory=memory.view(),
                            return_kv=True, scene=scene, validate=False)  # a frozen writer is in eval mode
        # the frame indices from the host (pos.cpu() would wait for the GPU)
        strategy.write_block(memory, [(k.float(), v.float()) for k, v in kvs], np.arange(pos0 + start, pos0 + start + bf))

    writer_uses_scene = strategy.writer == "generator"
    for j in range(0, fc, bf):
        write(context[:, j:j + bf], j, scenes[0] if writer_uses_scene else wscene)

    out = []
    for i in range(n):
        start = fc + i * bf
        pos = torch.arange(pos0 + start, pos0 + start + bf, device=context.device)
        acts = actions[:, start:start + bf]
        view = memory.view()
        # rank 0's draw everywhere: under FSDP each generator call is collective
        exit_step = same_on_all_ranks(int(torch.randint(0, len(sigmas), ())), context.device)
        x = torch.randn(b, bf, *context.shape[2:], device=context.device)
        x0 = x
        for k, s in enumerate(sigmas[: exit_step + 1]):
            s_t = torch.full((b, bf), s, device=x.device)
            with torch.set_grad_enabled(grad and k == exit_step), autocast():
                v = generator(x, s_t * 1000.0, acts, pos, memory=view, scene=scenes[i], validate=False)
            x0 = x - s * v.float()
            if k < exit_step:
                x = (1 - sigmas[k + 1]) * x0.detach() + sigmas[k + 1] * torch.randn_like(x0)
        out.append(x0)
        write(x0.detach(), start, scenes[i] if writer_uses_scene else wscene)
    return torch.cat(out, 1)
