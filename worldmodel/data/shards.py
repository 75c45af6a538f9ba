"""The dataset format on disk (spec: docs/dataset.md): reading and atomic writing of shards.

    DIR/dataset.json                 dataset metadata (resolution, frame rate, names, provenance)
    DIR/shards/<name>/frames.npy     [N, H, W, 3] uint8 RGB
    DIR/shards/<name>/actions.npy    [N, 4] float32 (turn, look, forward, strafe); row i led to frame i
    DIR/shards/<name>/poses.npy      [N, 5] float32 (x, y, z, angle, pitch) at frame i
    DIR/shards/<name>/shard.json     {"frames": N, "episodes": [{"start", "length", "scene", ...}]}

A shard holds whole episodes, concatenated. It is written under `shards/.tmp-<name>` and renamed
into place only when complete, so a crash never leaves a half shard that looks valid.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldmodel.actions import ACTION_DIM, ACTION_NAMES, POSE_DIM, POSE_NAMES

FORMAT_VERSION = 1
ARRAYS = ("frames", "actions", "poses")


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_dataset_meta(root: str | Path, meta: dict) -> None:
    """Write `dataset.json`, adding the format's fixed fields."""
    root = Path(root)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    full = {"format": "magworld-dataset", "version": FORMAT_VERSION, "action_names": list(ACTION_NAMES),
            "pose_names": list(POSE_NAMES), **meta}
    _write_json_atomic(root / "dataset.json", full)


def read_dataset_meta(root: str | Path) -> dict:
    return json.loads((Path(root) / "dataset.json").read_text())


@dataclass
class Episode:
    """One episode inside a shard: rows [start, start + length) of the shard's arrays."""

    shard: Path
    start: int
    length: int
    scene: int
    info: dict = field(default_factory=dict)  # map, wad, policy, seed, ... as written


class ShardWriter:
    """Collects episodes and writes them as one shard, atomically, on `close()`.

    add_episode(frames [n, H, W, 3] uint8, actions [n, 4] float32, poses [n, 5] float32, scene, **info)
    """

    def __init__(self, root: str | Path, name: str):
        self.root, self.name = Path(root), name
        self.frames: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.poses: list[np.ndarray] = []
        self.episodes: list[dict] = []
        self.n = 0

    def add_episode(self, frames, actions, poses, scene: int, **info) -> None:
        frames, actions, poses = np.asarray(frames), np.asarray(actions), np.asarray(poses)
        n = len(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [n, H, W, 3], got {frames.dtype} {frames.shape}")
        if actions.shape != (n, ACTION_DIM) or poses.shape != (n, POSE_DIM):
            raise ValueError(f"actions {actions.shape} / poses {poses.shape} must be [{n}, {ACTION_DIM}] / [{n}, {POSE_DIM}]")
        self.frames.append(frames)
        self.actions.append(actions.astype(np.float32))
        self.poses.append(poses.astype(np.float32))
        self.episodes.append({"start": self.n, "length": n, "scene": int(scene), **info})
        self.n += n

    def close(self) -> Path | None:
        """Write the shard; returns its path (None when empty)."""
        if not self.episodes:
            return None
        shards = self.root / "shards"
        shards.mkdir(parents=True, exist_ok=True)
        tmp = shards / f".tmp-{self.name}-{os.getpid()}"
        final = shards / self.name
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        arrays = {"frames": np.concatenate(self.frames), "actions": np.concatenate(self.actions),
                  "poses": np.concatenate(self.poses)}
        for key, arr in arrays.items():
            with open(tmp / f"{key}.npy", "wb") as f:
                np.save(f, arr)
                f.flush()
                os.fsync(f.fileno())
        _write_json_atomic(tmp / "shard.json", {"frames": self.n, "episodes": self.episodes})
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        self.frames, self.actions, self.poses = [], [], []
        return final


def list_shards(root: str | Path) -> list[Path]:
    """Complete shards (temporary directories of interrupted writes are skipped), sorted by name."""
    d = Path(root) / "shards"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_shard_index(shard: Path) -> list[Episode]:
    meta = json.loads((shard / "shard.json").read_text())
    return [Episode(shard, e["start"], e["length"], e.get("scene", -1),
                    {k: v for k, v in e.items() if k not in ("start", "length", "scene")}) for e in meta["episodes"]]


def open_arrays(shard: Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """The shard's arrays, memory-mapped by default so that nothing is read until sliced."""
    mode = "r" if mmap else None
    return {k: np.load(shard / f"{k}.npy", mmap_mode=mode) for k in ARRAYS}


def iter_episodes(root: str | Path):
    """Yield (Episode, frames [n,H,W,3] uint8, actions [n,4] float32, poses [n,5] float32) in order;
    arrays are memory-mapped slices."""
    for shard in list_shards(root):
        arrays = open_arrays(shard)
        for ep in read_shard_index(shard):
            sl = slice(ep.start, ep.start + ep.length)
            yield ep, arrays["frames"][sl], arrays["actions"][sl], arrays["poses"][sl]
