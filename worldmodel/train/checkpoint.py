"""Model directories and training states on disk: safetensors + JSON, never pickle, written atomically.

A checkpoint directory holds

    config.json                      the WorldModelConfig
    <name>.safetensors               weights of model <name> (what inference loads), or, when
    <name>.index.json + <name>-NNNNN-of-MMMMM.safetensors   larger than SHIP_FILE_BYTES, shards
    training/state.{json,safetensors}      step, optimizers, EMA, raw weights (written by rank 0)
    training/rank<R>.{json,safetensors}    RNG states and data position of rank R

`training/` is only needed to resume; a shipped model directory is the rest. A directory is
replaced as a whole: it is written beside the target (`<dir>.tmp`), then swapped in by renames,
so a crash mid-save leaves the previous checkpoint loadable (as `<dir>` or, if the crash hit
between the two renames, `<dir>.old`, which `resolve_checkpoint` finds).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from worldmodel.config import WorldModelConfig
from worldmodel.train.distributed import load_state
from worldmodel.train.safetensors_header import DamagedFile, TensorEntry, read_header
from worldmodel.train.tree_io import flatten, unflatten

# Deployment limit per shipped weights file (hosting and plugin bundles cap file size at 16 MiB).
# 15 MB, not 16 MiB: the work tree laid for session 15 came without the bundle's two 16.6 MB
# shards (git still had them), while every file of 8.3 MB and less was there.
SHIP_FILE_BYTES = 15 * 1000 * 1000
CONFIG_FILE = "config.json"
TRAINING_DIR = "training"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, or does not fit the model or run it is loaded into."""


# --- atomic files and directories -------------------------------------------------------------


def _fsync(path: Path) -> None:
    # Data on disk before the rename makes it visible: a power cut must not leave an empty file.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None):
    tmp = path.with_name(path.name + ".partial")
    save_file(_unshared(tensors), str(tmp), metadata=metadata)
    _fsync(tmp)
    os.replace(tmp, path)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights, views): copy the repeats.
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, t in tensors.items():
        t = t.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (0, -1)
        if t.numel() and (key in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size()):
            t = t.clone()
        seen.add(key)
        out[k] = t
    return out


def staging_path(directory: str | Path) -> Path:
    return Path(str(directory) + ".tmp")


def prepare_staging(directory: str | Path) -> Path:
    """Create an empty staging directory beside `directory` (removing a stale one) and return it."""
    staging = staging_path(directory)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def commit_staging(directory: str | Path) -> None:
    """Swap the staging directory in for `directory`; the old one is removed only afterwards."""
    directory = Path(directory)
    staging, old = staging_path(directory), Path(str(directory) + ".old")
    if old.exists() and directory.exists():
        shutil.rmtree(old)
    if directory.exists():
        os.replace(directory, old)
    os.replace(staging, directory)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """`with atomic_directory(d) as tmp:` write into tmp; `d` is replaced only if the block succeeds."""
    staging = prepare_staging(directory)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    commit_staging(directory)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a run directory (`<run>/checkpoint`) or a checkpoint directory.

    Falls back to `<dir>.old` when a save was interrupted between its two renames.
    """
    path = Path(path)
    for candidate in (path, path / "checkpoint"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
        old = Path(str(candidate) + ".old")
        if (old / CONFIG_FILE).is_file():
            return old
    raise CheckpointError(f"no checkpoint at {path}: expected {path / CONFIG_FILE} or {path / 'checkpoint' / CONFIG_FILE}")


# --- config -----------------------------------------------------------------------------------


def save_config(directory: str | Path, config: WorldModelConfig) -> None:
    _atomic_write_text(Path(directory) / CONFIG_FILE, config.to_json() + "\n")


def load_config(directory: str | Path) -> WorldModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}; is it a magworld checkpoint directory?")
    try:
        return WorldModelConfig.from_dict(_read_json(path))
    except (ValueError, TypeError) as e:  # a damaged or hand-edited file: say which, in one line
        raise CheckpointError(f"{path}: {e}") from None


def _read_json(path: Path):
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def config_differences(saved: WorldModelConfig, current: WorldModelConfig, sections: list[str] | None = None) -> list[str]:
    """`section.field: saved -> current` for every field that differs (in `sections`, default all but name)."""
    a, b = saved.to_dict(), current.to_dict()
    sections = sections or [k for k in a if k != "name"]
    diffs = []
    for section in sections:
        for key in sorted(set(a[section]) | set(b[section])):
            if a[section].get(key) != b[section].get(key):
                diffs.append(f"{section}.{key}: checkpoint has {a[section].get(key)!r}, this run has {b[section].get(key)!r}")
    return diffs


def check_config(directory: str | Path, current: WorldModelConfig, sections: list[str] | None = None) -> None:
    """Raise CheckpointError naming each field where the checkpoint's config differs from `current`."""
    diffs = config_differences(load_config(directory), current, sections)
    if diffs:
        raise CheckpointError(
            f"checkpoint {directory} does not match this configuration:\n  " + "\n  ".join(diffs)
            + "\n(use the checkpoint's preset and --set overrides, or start a new --out directory)"
        )


# --- weights ----------------------------------------------------------------------------------


def save_weights(directory: str | Path, name: str, state: dict[str, torch.Tensor], max_file_bytes: int = SHIP_FILE_BYTES):
    """Write `state` as `<name>.safetensors`, or as shards of at most `max_file_bytes` each.

    A tensor larger than the limit is stored flattened in pieces and reassembled on load.
    """
    directory = Path(directory)
    state = _unshared(state)
    total = sum(t.numel() * t.element_size() for t in state.values())
    for stale in list(directory.glob(f"{name}-*-of-*.safetensors")) + [directory / f"{name}.index.json"]:
        stale.unlink(missing_ok=True)
    if total <= max_file_bytes:
        _atomic_save_tensors(state, directory / f"{name}.safetensors", {"format": "pt"})
        return
    (directory / f"{name}.safetensors").unlink(missing_ok=True)
    pieces: dict[str, torch.Tensor] = {}
    split: dict[str, dict[str, Any]] = {}
    for key, t in state.items():
        nbytes = t.numel() * t.element_size()
        if nbytes <= max_file_bytes:
            pieces[key] = t
            continue
        per_piece = max(1, max_file_bytes // t.element_size())
        flat = t.reshape(-1)
        parts = [f"{key}@{i}" for i in range(math.ceil(flat.numel() / per_piece))]
        for i, part in enumerate(parts):
            pieces[part] = flat[i * per_piece : (i + 1) * per_piece].clone()
        split[key] = {"shape": list(t.shape), "parts": parts}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in pieces.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_file_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    files = [f"{name}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for file, shard in zip(files, shards):
        _atomic_save_tensors(shard, directory / file, {"format": "pt"})
        weight_map.update({k: file for k in shard})
    index = {"format": "magworld-sharded-v1", "total_bytes": total, "weight_map": weight_map, "split": split}
    _atomic_write_text(directory / f"{name}.index.json", json.dumps(index, indent=1) + "\n")


def stored_shapes(directory: str | Path, name: str) -> dict[str, tuple[int, ...]]:
    """{weight name: shape} of `<directory>/<name>` as `load_weights` would return it, read from the
    file headers only (nothing is allocated). Raises CheckpointError naming any damaged file."""
    directory = Path(directory)
    single, index_path = directory / f"{name}.safetensors", directory / f"{name}.index.json"
    if single.is_file():
        return {k: e.shape for k, e in _header(single).items()}
    if not index_path.is_file():
        have = sorted(p.name for p in directory.glob("*.safetensors"))
        raise CheckpointError(f"{directory} has no weights for {name!r} ({single.name}); it has {have}")
    weight_map, split = _read_index(index_path, name)
    headers = {}
    for file in sorted(set(weight_map.values())):
        if not (directory / file).is_file():
            raise CheckpointError(f"shard {file} of {name!r} is missing from {directory}")
        headers[file] = _header(directory / file)
    pieces = {}
    for key, file in weight_map.items():
        if key not in headers[file]:
            raise CheckpointError(f"{index_path}: {key!r} is not in {file}")
        pieces[key] = headers[file][key]
    for key, spec in split.items():
        parts = [pieces.pop(p, None) for p in spec["parts"]]
        if any(p is None or len(p.shape) != 1 or p.dtype != parts[0].dtype for p in parts) \
                or sum(p.numel for p in parts) != math.prod(spec["shape"]):
            raise CheckpointError(f"{index_path}: the pieces of {key!r} do not make a tensor of shape {spec['shape']}")
        pieces[key] = TensorEntry(parts[0].dtype, tuple(spec["shape"]))
    return {k: e.shape for k, e in pieces.items()}


def _header(path: Path):
    try:
        return read_header(path)
    except DamagedFile as e:
        raise CheckpointError(str(e)) from None


def _read_index(path: Path, name: str) -> tuple[dict[str, str], dict[str, dict]]:
    """(weight_map, split) of a shard index, checked: shard names are this model's own files in
    the same directory (never a path elsewhere), split specs are shapes and lists of pieces."""
    index = _read_json(path)
    shard_name = re.compile(rf"{re.escape(name)}-\d{{5}}-of-\d{{5}}\.safetensors")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    split = index.get("split", {}) if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and shard_name.fullmatch(v) for k, v in weight_map.items()):
        raise CheckpointError(f"{path}: 'weight_map' must map weight names to {name}-NNNNN-of-MMMMM.safetensors files")
    if not isinstance(split, dict) or not all(
            isinstance(spec, dict) and isinstance(spec.get("shape"), list) and isinstance(spec.get("parts"), list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in spec["shape"])
            and all(isinstance(p, str) for p in spec["parts"]) and spec["parts"] for spec in split.values()):
        raise CheckpointError(f"{path}: 'split' must map weight names to {{shape: [ints], parts: [names]}}")
    return weight_map, split


def load_weights(directory: str | Path, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict written by `save_weights` (single file or shards). Every file's header is
    checked first (`stored_shapes`), and every weight must be finite."""
    directory = Path(directory)
    stored_shapes(directory, name)
    single, index_path = directory / f"{name}.safetensors", directory / f"{name}.index.json"
    if single.is_file():
        pieces = load_file(str(single), device=str(device))
    else:
        weight_map, split = _read_index(index_path, name)
        pieces = {}
        for file in sorted(set(weight_map.values())):
            pieces.update(load_file(str(directory / file), device=str(device)))
        for key, spec in split.items():
            pieces[key] = torch.cat([pieces.pop(p) for p in spec["parts"]]).reshape(spec["shape"])
    for key, t in pieces.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            where = single if single.is_file() else index_path
            raise CheckpointError(f"{where}: weight {key!r} contains NaN or infinity (a diverged or damaged checkpoint)")
    return pieces


def load_into(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """`module.load_state_dict(state)`, with a mismatch explained in terms of `what` was loaded."""
    own = module.state_dict()
    _check_fit({k: tuple(v.shape) for k, v in own.items()}, {k: tuple(v.shape) for k, v in state.items()}, what)
    load_state(module, state)  # whole tensors, sharded where the module is (FSDP)


def _check_fit(own: dict[str, tuple], stored: dict[str, tuple], what: str) -> None:
    missing = sorted(set(own) - set(stored))
    unexpected = sorted(set(stored) - set(own))
    shapes = [f"{k}: checkpoint {stored[k]}, model {own[k]}" for k in own if k in stored and stored[k] != own[k]]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatches: " + "; ".join(shapes[:5]) + (" ..." if len(shapes) > 5 else ""))
        if missing:
            parts.append(f"{len(missing)} weights missing from the checkpoint, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} weights in the checkpoint that the model lacks, e.g. {unexpected[:3]}")
        raise CheckpointError(f"{what} does not fit the model (was it made with another config?): " + " | ".join(parts))


def load_module(module: nn.Module, directory: str | Path, name: str) -> nn.Module:
    """Load `<directory>/<name>` weights into `module` (on the module's device) and return it."""
    device = next(iter(module.state_dict().values()), torch.empty(0)).device
    load_into(module, load_weights(directory, name, device=device), f"weights {name!r} in {directory}")
    return module


def build_and_load(make: Callable[[], nn.Module], directory: str | Path, name: str) -> nn.Module:
    """`make()` loaded with `<directory>/<name>` weights. The module is first built on the meta
    device (no memory) and its weight names and shapes compared with the file headers, so that a
    config that does not match its weights fails before the real module is allocated."""
    with torch.device("meta"):
        skeleton = make()
    _check_fit({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, stored_shapes(directory, name),
               f"weights {name!r} in {directory}")
    return load_module(make(), directory, name)


# --- training state ---------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU, and the current CUDA device once CUDA is in use)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # Only this process's device: querying all would open a CUDA context on every GPU per rank.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuples(state["python"]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _to_tuples(o):
    return tuple(_to_tuples(v) for v in o) if isinstance(o, (list, tuple)) else o


def save_training_state(directory: str | Path, shared: dict[str, Any] | None, rank_state: dict[str, Any], rank: int):
    """Write the run-wide state (`shared`, rank 0 only: pass None elsewhere) and this rank's state.

    Both are nested dicts of tensors / arrays / scalars (see tree_io).
    """
    training = Path(directory) / TRAINING_DIR
    training.mkdir(parents=True, exist_ok=True)
    parts = [(f"rank{rank}", rank_state)]
    if shared is not None:
        parts.append(("state", shared))
    for stem, tree in parts:
        skeleton, tensors = flatten(tree, stem)
        _atomic_save_tensors(tensors, training / f"{stem}.safetensors")
        _atomic_write_text(training / f"{stem}.json", json.dumps(skeleton) + "\n")


def load_training_state(directory: str | Path, rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(shared, rank_state) as saved by `save_training_state`."""
    training = Path(directory) / TRAINING_DIR

    def read(stem: str):
        j, s = training / f"{stem}.json", training / f"{stem}.safetensors"
        if not (j.is_file() and s.is_file()):
            raise CheckpointError(f"{directory} has no training state {stem!r} (expected {j} and {s})")
        _header(s)
        return unflatten(_read_json(j), load_file(str(s)))

    shared = read("state")
    world = shared.get("world_size", 1)
    if not (training / f"rank{rank}.json").is_file():
        raise CheckpointError(f"{directory} was written by {world} processes; resume with the same number (rank {rank} has no state)")
    return shared, read(f"rank{rank}")
