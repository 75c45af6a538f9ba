"""`ClipDataset`: block-aligned clips streamed from shards, split across DDP ranks and workers.

Each item is a dict:
    frames  uint8   [L, H, W, 3]
    actions float32 [L, ACTION_DIM]   actions[i] led from frame i-1 to frame i (actions[0] of a clip
                                      is the real action before the clip, zero only at episode start)
    poses   float32 [L, POSE_DIM]
    scene   int64   []                 scene id of the episode's map (-1 when unknown)
with L = clip_frames, a multiple of block_frames. Clips start at block-aligned frame indices of an
episode and never cross an episode boundary.

One pass (`epoch`) visits every episode's non-overlapping clips, at an offset drawn per epoch so
that all block-aligned starts are seen over epochs, in an order shuffled from (seed, epoch). The
order is split first by rank, then by DataLoader worker; arrays are memory-mapped, so only the
clips read are loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from worldmodel.data.shards import Episode, list_shards, open_arrays, read_shard_index
from worldmodel.data.splits import split_of
from worldmodel.data.validate import require_valid

SPLITS = (None, "train", "heldout")


def episodes_of(root: Path, split: str | None, min_frames: int) -> list[Episode]:
    """The episodes of `split` (None: all) that are at least `min_frames` long, in shard order."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} must be one of {SPLITS}")
    out = []
    for shard in list_shards(root):
        for ep in read_shard_index(shard):
            if ep.length < min_frames:
                continue
            if split is not None and (ep.info.get("split") or split_of(ep.info.get("map", ""))) != split:
                continue
            out.append(ep)
    if not out:
        raise ValueError(f"{root}: no episode of split {split!r} is at least {min_frames} frames long")
    return out


class ClipDataset(IterableDataset):
    def __init__(self, root, clip_frames: int, block_frames: int = 3, split: str | None = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0):
        if clip_frames <= 0 or clip_frames % block_frames:
            raise ValueError(f"clip_frames {clip_frames} must be a positive multiple of block_frames {block_frames}")
        if split not in SPLITS:
            raise ValueError(f"split {split!r} must be one of {SPLITS}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        self.root, self.clip, self.block = Path(root), clip_frames, block_frames
        if not (self.root / "dataset.json").is_file():
            raise FileNotFoundError(f"no dataset at {self.root}: expected {self.root / 'dataset.json'} "
                                    "(record one with `magworld data record`, format in docs/dataset.md)")
        require_valid(self.root)  # what `magworld data check` refuses, training refuses in its words
        self.split, self.rank, self.world, self.seed = split, rank, world_size, seed
        self.episodes = episodes_of(self.root, split, clip_frames)
        self.epoch = 0
        self.skip = 0

    def clips(self, epoch: int) -> list[tuple[int, int]]:
        """This rank's (episode index, start frame) for `epoch`, in order, before worker split."""
        rng = np.random.default_rng([self.seed, epoch])
        out = []
        for i, ep in enumerate(self.episodes):
            n = ep.length // self.clip
            slack_blocks = (ep.length - n * self.clip) // self.block
            offset = int(rng.integers(slack_blocks + 1)) * self.block
            out += [(i, offset + k * self.clip) for k in range(n)]
        order = rng.permutation(len(out))
        return [out[j] for j in order][self.rank :: self.world]

    def __len__(self) -> int:
        return len(self.clips(self.epoch))

    def state_dict(self) -> dict:
        """Sampling position: the epoch and how many of this rank's clips of it were consumed."""
        return {"seed": self.seed, "epoch": self.epoch, "skip": self.skip}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") in ("latent-clips", "frame-clips"):
            what = "the latent cache" if state["kind"] == "latent-clips" else "the frames held on the device"
            raise ValueError(f"this checkpoint's data position is of {what}, not of the frame dataset: "
                             "resume with the same --latent-cache / --frames-on-device setting it was trained with")
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this dataset has seed {self.seed}")
        self.epoch, self.skip = int(state["epoch"]), int(state.get("skip", 0))

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.skip = epoch, 0

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        order = self.clips(self.epoch)[self.skip :][wid::nw]
        arrays: dict[Path, dict] = {}
        for i, start in order:
            ep = self.episodes[i]
            if ep.shard not in arrays:
                arrays[ep.shard] = open_arrays(ep.shard)
            a = arrays[ep.shard]
            sl = slice(ep.start + start, ep.start + start + self.clip)
            if info is None:
                self.skip += 1
            yield {
                "frames": torch.from_numpy(np.array(a["frames"][sl])),
                "actions": torch.from_numpy(np.array(a["actions"][sl])),
                "poses": torch.from_numpy(np.array(a["poses"][sl])),
                "scene": torch.tensor(ep.scene, dtype=torch.int64),
            }
        if info is None:  # a full pass in this process: the next iteration is the next epoch
            self.set_epoch(self.epoch + 1)
