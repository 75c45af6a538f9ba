"""Damaged datasets: `data check` names the problem without crashing, and `train` refuses what
`data check` refuses, in the same words."""

import json

import numpy as np
import pytest

from worldmodel.cli import main
from worldmodel.data.dataset import ClipDataset
from worldmodel.data.shards import ShardWriter, list_shards, write_dataset_meta
from worldmodel.data.validate import check_dataset

H, W = 24, 32  # the tiny preset's frames, so that `train --preset tiny` could use the data


def _dataset(root, frames_requested=None):
    meta = {"width": W, "height": H, "frame_skip": 2, "fps": 17.5}
    if frames_requested is not None:
        meta["frames_requested"] = frames_requested
    write_dataset_meta(root, meta)
    rng = np.random.default_rng(0)
    for s in range(2):
        w = ShardWriter(root, f"s{s}")
        for e in range(2):
            n = 12
            actions = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
            actions[0] = 0
            w.add_episode(rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8), actions,
                          rng.normal(size=(n, 5)).astype(np.float32), scene=e, map="freedoom2.wad:MAP01")
        w.close()
    return root


def _shard(root):
    return list_shards(root)[0]


def _edit_json(path, fn):
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def _rewrite(root, name, fn):
    path = _shard(root) / f"{name}.npy"
    np.save(path, fn(np.load(path)))


def _negative_start(index):
    index["episodes"][0]["start"] = -3


# name -> (how to damage a good dataset, words of the problem)
DAMAGE = {
    "float32 frames": (lambda r: _rewrite(r, "frames", lambda a: a.astype(np.float32)), "expected uint8"),
    "negative episode start": (lambda r: _edit_json(_shard(r) / "shard.json", _negative_start),
                               "episode 0: starts at row -3"),
    "width as a string": (lambda r: _edit_json(r / "dataset.json", lambda m: m.update(width=str(W))),
                          "'width' and 'height' must be integers"),
    "NaN poses": (lambda r: _rewrite(r, "poses", lambda a: np.where(np.arange(len(a))[:, None] == 4, np.nan, a)),
                  "poses contain NaN or infinity (first at row 4)"),
    "empty frames.npy": (lambda r: (_shard(r) / "frames.npy").write_bytes(b""), "frames.npy cannot be read"),
    "episode past the end": (lambda r: _edit_json(_shard(r) / "shard.json", lambda i: i["episodes"].append(
        {"start": 24, "length": 5, "scene": 0})), "outside the shard's 24 rows"),
    "shard.json not an object": (lambda r: (_shard(r) / "shard.json").write_text("[]"), "not a JSON object"),
    "fewer frames than requested": (lambda r: _edit_json(r / "dataset.json", lambda m: m.update(frames_requested=96)),
                                    "incomplete, 48 of the 96 frames requested"),
}


def test_an_undamaged_dataset_is_valid_and_loads(tmp_path):
    root = _dataset(tmp_path, frames_requested=48)
    assert check_dataset(root) == ([], {"shards": 2, "episodes": 4, "frames": 48})
    assert len(ClipDataset(root, clip_frames=6)) == 8


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_check_and_training_refuse_a_damaged_dataset_in_the_same_words(tmp_path, name, capsys):
    breaker, words = DAMAGE[name]
    root = _dataset(tmp_path)
    breaker(root)
    problems, _ = check_dataset(root)
    assert any(words in p for p in problems), problems
    assert main(["data", "check", str(root)]) == 1
    assert words in capsys.readouterr().err
    with pytest.raises(ValueError, match="not valid") as e:
        ClipDataset(root, clip_frames=6)
    assert problems[0] in str(e.value) and "\n" not in str(e.value)


def test_train_refuses_a_dataset_that_check_refuses(tmp_path):
    root = _dataset(tmp_path / "data")
    DAMAGE["float32 frames"][0](root)
    with pytest.raises(ValueError, match="expected uint8"):
        main(["train", "autoencoder", "--data", str(root), "--out", str(tmp_path / "run"), "--preset", "tiny",
              "--max-steps", "1", "--batch-size", "2", "--no-progress", "--device", "cpu"])
    assert not (tmp_path / "run" / "checkpoint").exists()
