"""Attention masks, defined per frame and expanded to tokens.

A frame mask is a bool tensor [Fq, Fk]: True where a query frame may attend to a key frame.
Every token of a frame shares its frame's row, so the token mask is the frame mask with each
entry repeated `tokens_per_frame` times in both directions. On CPU (and for export) the dense
token mask is used with SDPA; on CUDA the same rule becomes a FlexAttention block mask.
"""

from __future__ import annotations

import torch


def block_causal(frames: int, block_frames: int, device=None) -> torch.Tensor:
    """Full attention inside a block of `block_frames`, causal across blocks. [F, F] bool."""
    blk = torch.arange(frames, device=device) // block_frames
    return blk[:, None] >= blk[None, :]


def memory_write(frames: int, block_frames: int, window_slots: int | None = None, device=None) -> torch.Tensor:
    """The memory model's clean pass over a whole history at once. [F, F] bool.

    Block j sees its own block and the kept (last) frame of each of the `window_slots` blocks
    before it (every earlier block when None). That is what block j sees when the blocks are
    written one by one at inference — the kept frames are the slots, and `mag` attends to the
    newest `attention_budget` slots when it retrieves nothing — so one forward under this mask
    gives every block's slot at once.
    """
    if frames % block_frames:
        raise ValueError(f"{frames} frames is not a whole number of blocks of {block_frames}")
    idx = torch.arange(frames, device=device)
    blk = idx // block_frames
    kept = (idx % block_frames) == block_frames - 1
    earlier = blk[:, None] > blk[None, :]
    if window_slots is not None:
        earlier &= blk[:, None] - blk[None, :] <= window_slots
    return (blk[:, None] == blk[None, :]) | (earlier & kept[None, :])


def mag_stage1(frames: int, block_frames: int, device=None) -> torch.Tensor:
    """The memory model's training mask over the sequence [clean frames ; noisy frames]. [2F, 2F] bool.

    Clean block j sees its own clean block and the kept (last) clean frame of every earlier block.
    Noisy block j sees its own noisy block and the kept clean frames of blocks <= j, so the only
    path from the clean frames of block j to its reconstruction is the compressed slot.
    """
    if frames % block_frames:
        raise ValueError(f"{frames} frames is not a whole number of blocks of {block_frames}")
    idx = torch.arange(frames, device=device)
    blk = idx // block_frames
    kept = (idx % block_frames) == block_frames - 1
    same = blk[:, None] == blk[None, :]
    clean_clean = memory_write(frames, block_frames, device=device)
    noisy_clean = (blk[:, None] >= blk[None, :]) & kept[None, :]
    noisy_noisy = same
    none = torch.zeros(frames, frames, dtype=torch.bool, device=device)
    top = torch.cat([clean_clean, none], dim=1)
    bottom = torch.cat([noisy_clean, noisy_noisy], dim=1)
    return torch.cat([top, bottom], dim=0)


def teacher_forcing(frames: int, block_frames: int, device=None) -> torch.Tensor:
    """Training with clean history over the sequence [clean frames ; noisy frames]. [2F, 2F] bool.

    Clean frames attend block-causally among themselves (they make the history, as the cache
    does at inference); noisy block j sees the clean blocks before j and its own noisy block —
    exactly what a block being denoised sees at inference.
    """
    if frames % block_frames:
        raise ValueError(f"{frames} frames is not a whole number of blocks of {block_frames}")
    blk = torch.arange(frames, device=device) // block_frames
    clean_clean = blk[:, None] >= blk[None, :]
    noisy_clean = blk[:, None] > blk[None, :]
    noisy_noisy = blk[:, None] == blk[None, :]
    none = torch.zeros(frames, frames, dtype=torch.bool, device=device)
    return torch.cat([torch.cat([clean_clean, none], 1), torch.cat([noisy_clean, noisy_noisy], 1)], 0)


def window_forcing(frames: int, block_frames: int, window_frames: int, sink_frames: int, device=None) -> torch.Tensor:
    """Teacher forcing limited to what the `window` strategy holds, over [clean ; noisy]. [2F, 2F] bool.

    At inference the block starting at frame s attends to the sink frames (< sink_frames) and the
    last `window_frames` frames before s, nothing older. Here both the clean and the noisy copy of
    block j see exactly those clean frames, plus their own block; frame 0 of the clip plays the
    session's first frame. With a window as long as the clip this is `teacher_forcing`.
    """
    if frames % block_frames:
        raise ValueError(f"{frames} frames is not a whole number of blocks of {block_frames}")
    idx = torch.arange(frames, device=device)
    blk = idx // block_frames
    start = (blk * block_frames)[:, None]  # first frame of each query frame's block
    key = idx[None, :]
    held = (key < start) & ((key < sink_frames) | (key >= start - window_frames))
    same = blk[:, None] == blk[None, :]
    none = torch.zeros(frames, frames, dtype=torch.bool, device=device)
    return torch.cat([torch.cat([same | held, none], 1), torch.cat([held, same], 1)], 0)


def expand_to_tokens(frame_mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """[Fq, Fk] -> [Fq*N, Fk*N] bool."""
    n = tokens_per_frame
    return frame_mask.repeat_interleave(n, dim=0).repeat_interleave(n, dim=1)


_FLEX_CACHE: dict = {}


@torch.compiler.disable  # a cache lookup on the host; a compiled model receives the BlockMask as an input
def flex_block_mask(frame_mask: torch.Tensor, tokens_per_frame: int):
    """The same rule as a FlexAttention BlockMask (CUDA only). Building one evaluates the rule
    over every (query, key) pair, so it is cached per mask tensor: a training stage builds its
    masks once and passes the same tensors every step (no device sync to look one up)."""
    key = id(frame_mask)
    hit = _FLEX_CACHE.get(key)
    if hit is not None and hit[0] is frame_mask and hit[1] == (frame_mask._version, tokens_per_frame):
        return hit[2]
    if len(_FLEX_CACHE) > 32:
        _FLEX_CACHE.clear()
    block_mask = _build_flex_block_mask(frame_mask, tokens_per_frame)
    _FLEX_CACHE[key] = (frame_mask, (frame_mask._version, tokens_per_frame), block_mask)
    return block_mask


def _build_flex_block_mask(frame_mask: torch.Tensor, tokens_per_frame: int):
    from torch.nn.attention.flex_attention import create_block_mask

    n = tokens_per_frame
    fm = frame_mask.contiguous()

    def mask_mod(b, h, q_idx, kv_idx):
        return fm[q_idx // n, kv_idx // n]

    lq, lk = fm.shape[0] * n, fm.shape[1] * n
    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=lq, KV_LEN=lk, device=fm.device)
