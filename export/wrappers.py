"""The networks of one inference loop as modules with flat tensor inputs and outputs.

Each wrapper is one exported graph. Shapes are static: one block of B frames, batch 1, and a KV
memory of S attended slots (S = `attention_budget` for `mag`, the capacity otherwise). The host
keeps the slot table and chooses which slots to attend and which slot to overwrite; the graphs
only see fixed-size buffers plus a validity mask, so an empty or half-full memory is padding.
With `all_valid=True` (the cudagraph backend) the mask is not read: the host gives every slot
of memory_k/v data (it captures one graph per number of held slots), so attention runs
unmasked on the fused kernels.

The cudagraph backend also runs GeneratorStep, MemoryWrite and Decoder over a batch of b
sessions (runtime/backends/graph_batch.py): every 1 below becomes b (x_t/x0/v/actions/prompt
[b,...], memory_k/v and k_new/v_new [L,b,...]), frame_pos becomes [b,B] (each session at its own
frames: each row gets its own RoPE), the decoder takes b*B frames; sigma and memory_valid stay
shared. The exported graphs keep batch 1.

Names (N = tokens per frame, L = layers, H = heads, D = head_dim, A = action_dim):

    GeneratorStep  x_t [1,B,C,h,w], sigma [1] float32, actions [1,B,A], frame_pos [B] int64,
                   prompt [1,Lp,Dt], memory_k/v [L,1,S,N,H,D], memory_valid [S] bool
                   -> x0 [1,B,C,h,w] (the clean estimate), v [1,B,C,h,w] (the flow velocity)
    MemoryWrite    x0 [1,B,C,h,w] (clean block), actions, frame_pos, memory_k/v, memory_valid
                   -> k_new/v_new [L,1,K,N,H,D] for the K frames the strategy keeps
    Decoder        latents [B,C,h,w] -> frames [B,H,W,3] uint8
    Encoder        frames [B,H,W,3] uint8 -> latents [B,C,h,w]
"""

from __future__ import annotations

import torch
from torch import nn

from worldmodel.autoencoder import Autoencoder, frames_to_uint8
from worldmodel.model import CausalDiT, MemoryView


def positions(model: CausalDiT, frame_pos: torch.Tensor):
    """(frame_pos [B], rope) for the network from the wrappers' frame_pos: [B] (every sample at
    these frames; rope None: the network makes it) or [b, B] (one row per sample: the RoPE tables
    of each row, [b, B*N, D/2] cos and sin, as CausalDiT.forward takes them)."""
    if frame_pos.dim() == 1:
        return frame_pos, None
    cos, sin = model.rope_tables(frame_pos.reshape(-1))  # frame-major: row r's frames are rows r*B..r*B+B-1
    b = frame_pos.shape[0]
    return frame_pos[0], (cos.view(b, -1, cos.shape[-1]), sin.view(b, -1, sin.shape[-1]))


class GeneratorStep(nn.Module):
    """One denoising step of one block against the memory. The prompt is an input (the host looks
    scene prompts up in the table saved beside the graphs), so one graph serves every scene."""

    def __init__(self, model: CausalDiT, all_valid: bool = False):
        super().__init__()
        self.model = model
        self.all_valid = all_valid

    def forward(self, x_t, sigma, actions, frame_pos, prompt, memory_k, memory_v, memory_valid):
        b, f = x_t.shape[:2]
        s = sigma.float()
        t = (s * 1000.0).expand(b, f)
        # validate=False: the host validates feeds; a value check would synchronise (and break
        # CUDA-graph capture).
        memory = MemoryView(memory_k, memory_v, memory_valid, all_valid=self.all_valid)
        frame_pos, rope = positions(self.model, frame_pos)
        v = self.model(x_t, t, actions, frame_pos, prompt, memory=memory, rope=rope, validate=False)
        x0 = x_t - s.to(x_t.dtype) * v  # x0 = x_t - s * v (worldmodel.diffusion.flow_matching)
        return x0, v


class MemoryWrite(nn.Module):
    """The clean pass (t = 0) over a finished block, with the writer's empty condition; returns the
    post-RoPE keys and values of the frames in `keep` (indices into the block)."""

    def __init__(self, writer: CausalDiT, keep: list[int], all_valid: bool = False):
        super().__init__()
        self.all_valid = all_valid
        if not keep:
            raise ValueError("a memory write graph needs at least one kept frame (strategy 'none' writes nothing)")
        self.writer = writer
        self.keep = list(keep)
        # A device-resident index: indexing with a Python list would copy it host-to-device on
        # every call, which a CUDA-graph capture does not allow. It moves with the module
        # (`build_wrappers(..., device=...)`): a wrapper made after its network was moved must be
        # moved too, or index_select meets a CPU index and a CUDA cache.
        self.register_buffer("keep_index", torch.as_tensor(self.keep, dtype=torch.long), persistent=False)

    def forward(self, x0, actions, frame_pos, memory_k, memory_v, memory_valid):
        b, f = x0.shape[:2]
        t0 = torch.zeros(b, f, dtype=torch.float32, device=x0.device)
        memory = MemoryView(memory_k, memory_v, memory_valid, all_valid=self.all_valid)
        frame_pos, rope = positions(self.writer, frame_pos)
        _, kvs = self.writer(x0, t0, actions, frame_pos, None, memory=memory, rope=rope, return_kv=True,
                             validate=False)
        k = torch.stack([k.index_select(1, self.keep_index) for k, _ in kvs])
        v = torch.stack([v.index_select(1, self.keep_index) for _, v in kvs])
        return k, v


class Decoder(nn.Module):
    """Normalised latents [F, C, h, w] -> RGB frames [F, H, W, 3] uint8 (as WorldModel.decode)."""

    def __init__(self, autoencoder: Autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, latents):
        return frames_to_uint8(self.autoencoder.decode(latents)).permute(0, 2, 3, 1)


class Encoder(nn.Module):
    """RGB frames [F, H, W, 3] uint8 -> normalised latents [F, C, h, w] (as WorldModel.encode)."""

    def __init__(self, autoencoder: Autoencoder, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.autoencoder = autoencoder
        self.dtype = dtype

    def forward(self, frames):
        x = frames.permute(0, 3, 1, 2).to(self.dtype) / 127.5 - 1.0
        return self.autoencoder.encode(x)
