"""The memory a config asks for, known before anything is allocated.

A checkpoint's config.json sets every buffer size. A damaged or hostile one (a memory of 10^9
frames, frames of 10^5 x 10^5 pixels, a million layers) must be refused when it is loaded, in
one line, instead of being allocated and then failing every request or taking the machine down.
Weights are counted exactly, from the networks built on the meta device (no memory); buffers
(one session's KV memory, one block's activations) are estimated from the config.
"""

from __future__ import annotations

import os

import torch

from worldmodel.config import WorldModelConfig

# Layers, residual blocks per stage, pack layers: far above any real model (wan-1.3b has 30);
# bounds the time it takes to build the networks, even on the meta device.
MAX_REPEATS = 1024
FLOAT_BYTES = 4  # float32: the largest dtype the networks and memory are held in
LIVE_FEATURE_MAPS = 4  # full-resolution feature maps of the autoencoder alive at once, about


def parameter_bytes(config: WorldModelConfig, memory_model: bool = True, semantic_pack: bool = False) -> int:
    """Bytes of the weights of the autoencoder, the generator, and optionally the memory model
    and the SemanticPack, in float32."""
    from worldmodel.autoencoder import Autoencoder
    from worldmodel.model import CausalDiT
    from worldmodel.model.semantic_pack import SemanticPack

    _check_repeats(config)
    with torch.device("meta"):
        nets = [Autoencoder(config.autoencoder), CausalDiT(config.model)]
        nets += [CausalDiT(config.model)] if memory_model else []
        nets += [SemanticPack(config.model, config.memory)] if semantic_pack else []
    return sum(t.numel() for net in nets for t in net.state_dict().values()) * FLOAT_BYTES


def session_bytes(config: WorldModelConfig, capacity: int | None = None) -> int:
    """One session's KV memory: keys and values of `capacity` frames (default: the config's) in
    every layer, `[layers, 1, capacity, tokens_per_frame, heads, head_dim]` each."""
    m = config.model
    capacity = config.memory.capacity_frames if capacity is None else capacity
    return 2 * m.layers * capacity * m.tokens_per_frame * m.dim * FLOAT_BYTES


def block_activation_bytes(config: WorldModelConfig) -> int:
    """One block's largest activations, roughly: its frames through the autoencoder at full
    resolution, and one layer's attention scores over the whole memory (the eager path)."""
    a, m = config.autoencoder, config.model
    frames = m.block_frames * a.frame_height * a.frame_width * a.base_channels * LIVE_FEATURE_MAPS
    queries = m.block_frames * m.tokens_per_frame
    scores = m.heads * queries * (config.memory.capacity_frames * m.tokens_per_frame + queries)
    return (frames + scores) * FLOAT_BYTES


def device_memory_bytes(device: str | torch.device) -> int:
    """Total memory of `device`: the GPU's, or the machine's RAM for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(config: WorldModelConfig, device: str | torch.device, memory_model: bool = True,
               semantic_pack: bool = False) -> int:
    """Raise ValueError (one line) if the weights, one session's memory and one block's
    activations would not fit in `device`'s memory. Returns the bytes needed."""
    _check_repeats(config)
    parts = {
        "weights": parameter_bytes(config, memory_model, semantic_pack),
        f"a session's memory of {config.memory.capacity_frames} frames": session_bytes(config),
        "one block's activations": block_activation_bytes(config),
    }
    need, have = sum(parts.values()), device_memory_bytes(device)
    if need > have:
        detail = ", ".join(f"{k} {_size(v)}" for k, v in parts.items())
        raise ValueError(f"this config needs {_size(need)} ({detail}) but {torch.device(device).type} "
                         f"memory is {_size(have)}; is the config damaged?")
    return need


def _check_repeats(config: WorldModelConfig) -> None:
    for section, name in (("model", "layers"), ("autoencoder", "res_blocks"), ("memory", "pack_layers")):
        value = getattr(getattr(config, section), name)
        if value > MAX_REPEATS:
            raise ValueError(f"{section}.{name} is {value}; at most {MAX_REPEATS} is supported")


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"
