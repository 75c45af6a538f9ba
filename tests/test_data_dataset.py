"""ClipDataset: block-aligned clips inside episodes, matching actions and poses, split across workers."""

import numpy as np
import pytest
import torch

from worldmodel.data.dataset import ClipDataset
from worldmodel.data.shards import ShardWriter, write_dataset_meta

H, W = 6, 8


def _episode(ep_id, n):
    """Frames carry (episode, frame index) in their pixels so a clip reveals where it came from."""
    idx = np.arange(n)
    frames = np.zeros((n, H, W, 3), np.uint8)
    frames[..., 0] = ep_id
    frames[..., 1] = idx[:, None, None] % 256
    frames[..., 2] = idx[:, None, None] // 256
    actions = np.stack([idx, idx * 2, idx * 3, -idx], 1).astype(np.float32)
    actions[0] = 0
    poses = np.stack([idx, idx + 1, idx + 2, idx % 360, np.full(n, ep_id)], 1).astype(np.float32)
    return frames, actions, poses


@pytest.fixture
def root(tmp_path):
    write_dataset_meta(tmp_path, {"width": W, "height": H, "frame_skip": 2, "fps": 17.5})
    lengths = {0: 40, 1: 31, 2: 13, 3: 50}
    for s, eps in enumerate([(0, 1), (2, 3)]):
        w = ShardWriter(tmp_path, f"s{s}")
        for e in eps:
            w.add_episode(*_episode(e, lengths[e]), scene=e, map=f"user.wad:M{e}")
        w.close()
    return tmp_path


def _where(item):
    f = item["frames"].numpy()
    return int(f[0, 0, 0, 0]), f[:, 0, 0, 1].astype(int) + 256 * f[:, 0, 0, 2].astype(int)


def test_clips_are_block_aligned_inside_episodes(root):
    ds = ClipDataset(root, clip_frames=12, block_frames=3)
    items = list(ds)
    assert len(items) == 3 + 2 + 1 + 4
    for it in items:
        assert it["frames"].shape == (12, H, W, 3) and it["frames"].dtype == torch.uint8
        assert it["actions"].shape == (12, 4) and it["actions"].dtype == torch.float32
        assert it["poses"].shape == (12, 5) and it["poses"].dtype == torch.float32
        ep, idx = _where(it)
        assert idx[0] % 3 == 0 and np.array_equal(idx, np.arange(idx[0], idx[0] + 12))
        assert idx[-1] < {0: 40, 1: 31, 2: 13, 3: 50}[ep]
        assert it["scene"].item() == ep and it["poses"][0, 4].item() == ep
        np.testing.assert_array_equal(it["actions"][:, 1].numpy(), np.where(idx == 0, 0, idx * 2))
        np.testing.assert_array_equal(it["poses"][:, 0].numpy(), idx)


def test_epochs_reshuffle_and_state_resumes(root):
    ds = ClipDataset(root, clip_frames=6, seed=5)
    first = [_where(x)[1][0] for x in ds]
    assert ds.state_dict()["epoch"] == 1
    second = [_where(x)[1][0] for x in ds]
    assert first != second
    resumed = ClipDataset(root, clip_frames=6, seed=5)
    it = iter(resumed)
    for _ in range(4):
        next(it)
    state = resumed.state_dict()
    again = ClipDataset(root, clip_frames=6, seed=5)
    again.load_state_dict(state)
    rest = [_where(x)[1][0] for x in again]
    assert rest == first[4:]


def test_ranks_and_workers_partition_the_clips(root):
    def keys(ds, workers=0):
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
        return [(_where(x)[0], int(_where(x)[1][0])) for x in loader]

    full = keys(ClipDataset(root, clip_frames=9))
    parts = [keys(ClipDataset(root, clip_frames=9, rank=r, world_size=2), workers=2) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(full) and not set(parts[0]) & set(parts[1])


def test_rejects_bad_requests(root):
    with pytest.raises(ValueError, match="multiple of block_frames"):
        ClipDataset(root, clip_frames=10)
    with pytest.raises(ValueError, match="at least 60 frames"):
        ClipDataset(root, clip_frames=60)
