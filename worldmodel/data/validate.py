"""`magworld data check`: every problem in a dataset directory, in words a user can act on.

Training refuses a dataset with any problem (`require_valid`, called by ClipDataset), with the
same words.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from worldmodel.actions import ACTION_DIM, POSE_DIM
from worldmodel.data.shards import ARRAYS, list_shards, read_dataset_meta

CHUNK = 4096  # rows checked at a time, so that a large shard never sits in memory whole


def check_dataset(root: str | Path) -> tuple[list[str], dict]:
    """Returns (problems, summary). An empty problem list means the dataset is valid."""
    root = Path(root)
    problems: list[str] = []
    summary = {"shards": 0, "episodes": 0, "frames": 0}
    if not root.is_dir():
        return [f"{root}: not a directory"], summary
    try:
        meta = read_dataset_meta(root)
    except FileNotFoundError:
        return [f"{root}: no dataset.json (is this a magworld dataset directory?)"], summary
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [f"{root}/dataset.json: not valid JSON ({e})"], summary
    if not isinstance(meta, dict):
        return [f"{root}/dataset.json: not a JSON object"], summary
    width, height = meta.get("width"), meta.get("height")
    if not isinstance(width, int) or not isinstance(height, int):
        problems.append(f"{root}/dataset.json: 'width' and 'height' must be integers, got {width!r}, {height!r}")
    shards = list_shards(root)
    leftovers = [p.name for p in (root / "shards").glob(".tmp-*")] if (root / "shards").is_dir() else []
    if leftovers:
        summary["interrupted_writes"] = leftovers  # harmless: never read, but worth saying
    if not shards:
        problems.append(f"{root}/shards: no complete shards")
    for shard in shards:
        problems += [f"shard {shard.name}: {p}" for p in _check_shard(shard, width, height, summary)]
    # The recorder writes what was asked for before it starts: a recording that was killed or
    # crashed has fewer frames, in shards that are each valid.
    requested = meta.get("frames_requested")
    if isinstance(requested, int) and not problems and summary["frames"] < requested:
        problems.append(f"{root}: incomplete, {summary['frames']} of the {requested} frames requested "
                        "(frames_requested in dataset.json); was the recording interrupted? Record it again, "
                        "or lower frames_requested to accept what is there")
    return problems, summary


def require_valid(root: str | Path) -> None:
    """Raise ValueError (one line: the first problem, and how many more) if `check_dataset` finds any."""
    problems, _ = check_dataset(root)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ValueError(f"dataset {root} is not valid: {problems[0]}{more}; `magworld data check {root}` lists them")


def _check_shard(shard: Path, width, height, summary) -> list[str]:
    out = []
    try:
        index = json.loads((shard / "shard.json").read_text())
    except FileNotFoundError:
        return ["shard.json is missing"]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [f"shard.json is not valid JSON ({e})"]
    if not isinstance(index, dict):
        return ["shard.json is not a JSON object"]
    arrays = {}
    for key in ARRAYS:
        path = shard / f"{key}.npy"
        if not path.exists():
            out.append(f"{key}.npy is missing" + (" (every frame needs a pose)" if key == "poses" else ""))
            continue
        try:
            arrays[key] = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:  # EOFError: an empty or truncated file
            out.append(f"{key}.npy cannot be read as a .npy array ({e or 'the file is empty'})")
    if out:
        return out
    f, a, p = arrays["frames"], arrays["actions"], arrays["poses"]
    if f.dtype != np.uint8 or f.ndim != 4 or f.shape[1:] != (height, width, 3):
        out.append(f"frames are {f.dtype} {list(f.shape)}; expected uint8 [N, {height}, {width}, 3]")
    if a.dtype != np.float32 or a.ndim != 2 or a.shape[1] != ACTION_DIM:
        out.append(f"actions are {a.dtype} {list(a.shape)}; expected float32 [N, {ACTION_DIM}]")
    if p.dtype != np.float32 or p.ndim != 2 or p.shape[1] != POSE_DIM:
        out.append(f"poses are {p.dtype} {list(p.shape)}; expected float32 [N, {POSE_DIM}]")
    n = len(f)
    if len(a) != n or len(p) != n:
        out.append(f"lengths differ: {n} frames, {len(a)} actions, {len(p)} poses (one of each per frame)")
    if index.get("frames") != n:
        out.append(f"shard.json says {index.get('frames')} frames but frames.npy holds {n}")
    if out:
        return out
    for name, arr in (("actions", a), ("poses", p)):
        for s in range(0, n, CHUNK):
            bad = ~np.isfinite(arr[s : s + CHUNK])
            if bad.any():
                row = s + int(np.argwhere(bad)[0][0])
                out.append(f"{name} contain NaN or infinity (first at row {row})")
                break
    episodes = index.get("episodes")
    if not isinstance(episodes, list) or not episodes:
        return out + ["shard.json lists no episodes"]
    expect = 0
    for i, ep in enumerate(episodes):
        if not isinstance(ep, dict):
            out.append(f"episode {i}: not a JSON object")
            continue
        start, length = ep.get("start"), ep.get("length")
        if not isinstance(start, int) or not isinstance(length, int) or length < 1:
            out.append(f"episode {i}: 'start' and 'length' must be integers, length >= 1 (got {start!r}, {length!r})")
            continue
        if start != expect:
            out.append(f"episode {i}: starts at row {start}, expected {expect} (episodes must tile the shard in order)")
        if not 0 <= start < n:
            out.append(f"episode {i}: starts at row {start}, outside the shard's {n} rows")
            break
        if np.any(a[start] != 0):
            out.append(f"episode {i}: its first action is {a[start].tolist()}; expected zeros (nothing led to frame 0)")
        if not isinstance(ep.get("scene", -1), int):
            out.append(f"episode {i}: 'scene' must be an integer")
        expect = start + length
    if expect != n and not any("episode" in o for o in out):
        out.append(f"episodes cover {expect} rows but the shard holds {n}")
    summary["shards"] += 1
    summary["episodes"] += len(episodes)
    summary["frames"] += n
    return out
