"""The networks of one inference loop as modules with flat tensor inputs and outputs.

Each wrapper is one exported graph. Shapes are static: one block of B frames, batch 1, and a KV
memory of S attended slots (S = `attention_budget` for `mag`, the capacity otherwise). The host
keeps the slot table and chooses which slots to attend and which slot to overwrite; the graphs
only see fixed-size buffers plus a validity mask, so an empty or half-full memory is padding.
With `all_valid=True` (the cudagraph backend) the mask is not read: the host gives every slot
of memory_k/v data (it captures one graph per number of held slots), so attention runs
unmasked on the fused kernels.

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
        v = self.model(x_t, t, actions, frame_pos, prompt, memory=memory, validate=False)
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
        _, kvs = self.writer(x0, t0, actions, frame_pos, None, memory=memory, return_kv=True, validate=False)
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
