"""Latent cache: every frame of a dataset encoded once by one autoencoder, kept beside the dataset.

    DATA/latents/<key>/latents.npy   [N, C, h, w] float16: the shards' frames in `list_shards`
                                     order, each shard's rows in order (row r of shard s is
                                     frame r of that shard)
    DATA/latents/<key>/cache.json    {"format", "version", "encoder_sha256", "shards":
                                     [{"name", "frames"}], "shape", "dtype"}

`key` is the first 16 hex digits of a SHA-256 over what decides the latents: every tensor of the
autoencoder's weights except the decoder's (name, dtype, shape and bytes; the encoder and the
latent statistics). A changed encoder gets a new cache and a stale one is never read, while a
decoder fine-tune (`train autoencoder --decoder-only`) keeps the cache, as it keeps the latents; a dataset whose shards changed
(added, removed, re-recorded with another length) fails the shard check and is encoded again.
The cache is written under a temporary name and renamed into place when complete.

Training stages over latents (teacher, generator, memory model, ...) read it instead of running
the autoencoder on every step: on a GPU that per-step encoding was most of the step's time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from worldmodel.data.shards import list_shards, open_arrays, read_shard_index
from worldmodel.data.validate import require_valid

FORMAT = "magworld-latent-cache"
VERSION = 3  # 3: keyed by the encoder's values (2: its stored bytes; 1: the whole weights file)
DECODER_PREFIX = "decoder."  # tensors that do not change the latents
STORE_DTYPE = np.float16  # half the bytes of float32; the latents' rounding is ~1e-3 of their scale


def autoencoder_key(autoencoder_dir) -> tuple[str, str]:
    """(key, full sha256) of the encoding half of the autoencoder in a run/checkpoint directory.

    Floating tensors are hashed as float32 values, not as stored: the encoder runs in float32
    whatever the file holds, so a bf16 checkpoint and a run's float32 copy of the same weights
    make the same latents and share one cache (session 15 encoded the data twice for them)."""
    from safetensors import safe_open

    from worldmodel.train import checkpoint as ckpt

    directory = ckpt.resolve_checkpoint(autoencoder_dir)
    weights = Path(directory) / "autoencoder.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} has no autoencoder.safetensors to encode the dataset with")
    h = hashlib.sha256()
    with safe_open(weights, "pt") as f:
        for name in sorted(k for k in f.keys() if not k.startswith(DECODER_PREFIX)):
            t = f.get_tensor(name)
            t = (t.float() if t.is_floating_point() else t).contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest = h.hexdigest()
    return digest[:16], digest


def _shard_table(root: Path) -> list[dict]:
    return [{"name": s.name, "frames": sum(ep.length for ep in read_shard_index(s))} for s in list_shards(root)]


def cache_path(root, autoencoder_dir) -> Path:
    key, _ = autoencoder_key(autoencoder_dir)
    return Path(root) / "latents" / key


def is_current(root, autoencoder_dir) -> bool:
    """True when the cache for this autoencoder exists and matches the dataset's shards."""
    root = Path(root)
    key, digest = autoencoder_key(autoencoder_dir)
    meta_file = root / "latents" / key / "cache.json"
    if not meta_file.is_file():
        return False
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError:
        return False
    return (meta.get("format") == FORMAT and meta.get("version") == VERSION
            and meta.get("encoder_sha256") == digest and meta.get("shards") == _shard_table(root))


@torch.no_grad()
def build(root, autoencoder_dir, device: str | torch.device = "cpu", batch_frames: int = 1024,
          progress: bool = True) -> Path:
    """Encode every frame of the dataset at `root` (if the cache is not current); returns its directory."""
    from worldmodel.autoencoder import channels_first, load_autoencoder

    root = Path(root)
    final = cache_path(root, autoencoder_dir)
    if is_current(root, autoencoder_dir):
        return final
    require_valid(root)  # what `magworld data check` refuses is never encoded (nor trained on)
    _, digest = autoencoder_key(autoencoder_dir)
    device = torch.device(device)
    ae = load_autoencoder(autoencoder_dir, device)
    shards = _shard_table(root)
    total = sum(s["frames"] for s in shards)
    if total == 0:
        raise ValueError(f"{root} holds no frames to encode")
    a = ae.config
    shape = (total, a.latent_channels, a.latent_height, a.latent_width)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    out = np.lib.format.open_memmap(tmp / "latents.npy", mode="w+", dtype=STORE_DTYPE, shape=shape)
    bar = _progress(total, progress)
    row = 0
    # The same precision as encoding on the fly in a training step (LatentStage.encode).
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    for shard in list_shards(root):
        frames = open_arrays(shard)["frames"]
        if frames.shape[1:3] != (a.frame_height, a.frame_width):
            raise ValueError(f"{shard} has {frames.shape[1]}x{frames.shape[2]} frames but the autoencoder in "
                             f"{autoencoder_dir} takes {a.frame_height}x{a.frame_width}")
        for i in range(0, len(frames), batch_frames):
            x = torch.from_numpy(np.array(frames[i:i + batch_frames])).to(device)
            with autocast:
                z = ae.encode(channels_first(x))
            out[row:row + len(x)] = z.float().cpu().numpy().astype(STORE_DTYPE)
            row += len(x)
            bar.update(len(x))
    bar.close()
    out.flush()
    del out
    meta = {"format": FORMAT, "version": VERSION, "encoder_sha256": digest, "shards": shards,
            "shape": list(shape), "dtype": np.dtype(STORE_DTYPE).name}
    (tmp / "cache.json").write_text(json.dumps(meta, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def load(root, autoencoder_dir) -> tuple[np.ndarray, dict[str, int]]:
    """(latents [N, C, h, w] float16 memory-mapped, {shard name: first row}) of a current cache."""
    root = Path(root)
    if not is_current(root, autoencoder_dir):
        raise FileNotFoundError(f"{root} has no current latent cache for {autoencoder_dir}: build it with "
                                f"`magworld data encode --data {root} --autoencoder {autoencoder_dir}`")
    directory = cache_path(root, autoencoder_dir)
    meta = json.loads((directory / "cache.json").read_text())
    offsets, row = {}, 0
    for s in meta["shards"]:
        offsets[s["name"]] = row
        row += s["frames"]
    return np.load(directory / "latents.npy", mmap_mode="r"), offsets


def _progress(total: int, enabled: bool):
    from worldmodel.train.metrics_log import Progress

    return Progress(total, enabled=enabled, desc="encoding frames")
