"""The recorder on a real ViZDoom run: what it writes, that poses follow actions, and the validator."""

import json
import shutil

import numpy as np
import pytest

from worldmodel.actions import ACTION_DIM, POSE_DIM
from worldmodel.cli import main
from worldmodel.data.recorder import RecordConfig, record
from worldmodel.data.shards import iter_episodes, list_shards, read_dataset_meta
from worldmodel.data.validate import check_dataset

MAPS = ["freedoom2.wad:MAP01", "freedoom1.wad:E1M1"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "ds"
    result = record(RecordConfig(out=str(out), frames=400, maps=MAPS, workers=2, episode_frames=150,
                                 shard_frames=150, seed=3), progress=False)
    return out, result


def test_recording_has_frames_actions_poses_and_metadata(recording):
    out, result = recording
    assert result["frames"] == 400
    meta = read_dataset_meta(out)
    assert (meta["width"], meta["height"], meta["frame_skip"], meta["fps"]) == (160, 120, 2, 17.5)
    assert meta["policy"] == "mix" and meta["seed"] == 3 and meta["wads"] == ["freedoom1.wad", "freedoom2.wad"]
    total = 0
    for ep, frames, actions, poses in iter_episodes(out):
        n = ep.length
        total += n
        assert frames.shape == (n, 120, 160, 3) and frames.dtype == np.uint8
        assert actions.shape == (n, ACTION_DIM) and actions.dtype == np.float32
        assert poses.shape == (n, POSE_DIM) and poses.dtype == np.float32
        assert np.all(actions[0] == 0)
        assert ep.info["map"] in MAPS and ep.scene >= 0
        assert frames.std() > 10  # a rendered scene, not a blank screen
    assert total == 400
    assert len(list_shards(out)) >= 2


def test_poses_follow_actions(recording):
    """Turn and look change the recorded angle and pitch by exactly the recorded action."""
    out, result = recording
    assert result["pose_check"]["turn_exact"] == 1.0
    assert result["pose_check"]["look_exact"] == 1.0
    assert result["pose_check"]["move_free_space"] > 0.5  # the rest are frames against walls
    for _, _, actions, poses in iter_episodes(out):
        dturn = (np.diff(poses[:, 3].astype(np.float64)) + 180) % 360 - 180
        np.testing.assert_allclose(dturn, actions[1:, 0], atol=1e-3)
        np.testing.assert_allclose(np.diff(poses[:, 4]), actions[1:, 1], atol=1e-3)
        moving = np.abs(actions[1:, 2]) > 1
        if moving.sum() > 10:
            assert np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1)[moving].mean() > 1.0


def test_same_seed_same_recording(recording, tmp_path):
    out, _ = recording
    again = tmp_path / "again"
    record(RecordConfig(out=str(again), frames=400, maps=MAPS, workers=2, episode_frames=150, shard_frames=150,
                        seed=3), progress=False)
    for (e1, f1, a1, p1), (e2, f2, a2, p2) in zip(iter_episodes(out), iter_episodes(again), strict=True):
        assert e1.info["map"] == e2.info["map"]
        assert np.array_equal(f1, f2) and np.array_equal(a1, a2) and np.array_equal(p1, p2)


def test_validator_accepts_recording(recording, capsys):
    out, _ = recording
    assert check_dataset(out)[0] == []
    assert main(["data", "check", str(out)]) == 0


def _broken_copy(src, dst, breaker):
    shutil.copytree(src, dst)
    shard = list_shards(dst)[0]
    breaker(shard)
    return dst


def _rewrite(shard, name, fn):
    arr = np.load(shard / f"{name}.npy")
    np.save(shard / f"{name}.npy", fn(arr))


BREAKERS = {
    "wrong frame shape": (lambda s: _rewrite(s, "frames", lambda a: a[:, :, :80]), "expected uint8"),
    "NaN in poses": (lambda s: _rewrite(s, "poses", lambda a: np.where(np.arange(len(a))[:, None] == 5, np.nan, a)),
                     "NaN"),
    "missing poses": (lambda s: (s / "poses.npy").unlink(), "poses.npy is missing"),
    "mismatched lengths": (lambda s: _rewrite(s, "actions", lambda a: a[:-3]), "lengths differ"),
    "float64 actions": (lambda s: _rewrite(s, "actions", lambda a: a.astype(np.float64)), "expected float32"),
    "episode index off": (lambda s: (s / "shard.json").write_text(json.dumps(
        {**json.loads((s / "shard.json").read_text()), "frames": 1})), "says 1 frames"),
}


@pytest.mark.parametrize("name", sorted(BREAKERS))
def test_validator_rejects_broken_shard(recording, tmp_path, name, capsys):
    out, _ = recording
    breaker, message = BREAKERS[name]
    bad = _broken_copy(out, tmp_path / "bad", breaker)
    problems, _ = check_dataset(bad)
    assert any(message in p for p in problems), problems
    assert main(["data", "check", str(bad)]) == 1
    assert message in capsys.readouterr().err


def test_interrupted_shard_write_is_ignored(recording, tmp_path):
    """A crash mid-write leaves only a `.tmp-*` directory, which readers never take for a shard."""
    out, _ = recording
    d = tmp_path / "crashed"
    shutil.copytree(out, d)
    half = d / "shards" / ".tmp-w00-00009-123"
    half.mkdir()
    np.save(half / "frames.npy", np.zeros((3, 120, 160, 3), np.uint8))
    problems, summary = check_dataset(d)
    assert problems == [] and summary["interrupted_writes"] == [half.name]
    assert half not in list_shards(d)


def test_bad_user_input_is_a_message_not_a_traceback(tmp_path, capsys):
    assert main(["data", "record", "--frames", "10", "--out", str(tmp_path / "x"), "--resolution", "100x100"]) == 2
    assert "cannot render 100x100" in capsys.readouterr().err
    assert main(["data", "record", "--frames", "10", "--out", str(tmp_path / "x"), "--maps", "MAP01"]) == 2
    assert "<wad>:<map>" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path / "nothing")]) == 1
