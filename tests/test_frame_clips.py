"""The autoencoder's frames held on the device (FrameClips): the clips are the dataset's own frames,
block-aligned inside episodes, shared between instances, resumed exactly, and the autoencoder stage
trains on them through `magworld train` as it does on shard reads."""

import numpy as np
import pytest
import torch

from train_helpers import options, run_straight_and_resumed
from worldmodel.cli import main
from worldmodel.config import preset
from worldmodel.data.dataset import ClipDataset
from worldmodel.data.frame_clips import FrameClips, frames_bytes
from worldmodel.data.shards import ShardWriter, write_dataset_meta
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.distributed import DistInfo
from worldmodel.train.stage_autoencoder import AutoencoderStage
from worldmodel.train.trainer import Trainer

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
A = preset("tiny").autoencoder


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    write_dataset_meta(root, {"width": A.frame_width, "height": A.frame_height, "frame_skip": 2, "fps": 17.5})
    g = np.random.default_rng(0)
    for shard, lengths in (("s0", [20, 13]), ("s1", [31])):
        w = ShardWriter(root, shard)
        for e, n in enumerate(lengths):
            frames = g.integers(0, 256, (n, A.frame_height, A.frame_width, 3), dtype=np.uint8)
            poses = np.zeros((n, 5), np.float32)
            poses[:, 0] = 1000 * (10 * int(shard[1]) + e) + np.arange(n)  # which episode and frame a row is
            w.add_episode(frames, np.zeros((n, 4), np.float32), poses, scene=e, map=f"user.wad:M{e}", split="train")
        w.close()
    return root


def _frames_by_pose(root):
    """(episode code, frame) -> the stored frame, read straight from the shards."""
    out = {}
    for shard in ("s0", "s1"):
        frames = np.load(root / "shards" / shard / "frames.npy")
        poses = np.load(root / "shards" / shard / "poses.npy")
        for f, x in zip(frames, poses[:, 0]):
            out[int(x)] = f
    return out


def test_clips_are_the_stored_frames_block_aligned_and_resume_exactly(data):
    clips = FrameClips(data, clip_frames=3, block_frames=3, seed=7)
    assert len(clips) == len(range(0, 18, 3)) + len(range(0, 11, 3)) + len(range(0, 29, 3))
    assert frames_bytes(data, None, 3) == 64 * A.frame_height * A.frame_width * 3
    stored = _frames_by_pose(data)
    seen = []
    for _ in range(5):
        b = clips.next_batch(4)
        assert b["frames"].dtype == torch.uint8 and b["frames"].shape == (4, 3, A.frame_height, A.frame_width, 3)
        x = b["poses"][..., 0].long()
        assert ((x // 1000) == (x[:, :1] // 1000)).all(), "a clip crossed an episode boundary"
        assert ((x[:, 0] % 1000) % 3 == 0).all(), "a clip does not start on a block"
        for i in range(4):
            for t in range(3):
                assert np.array_equal(b["frames"][i, t].numpy(), stored[int(x[i, t])])
        seen.append(b)
    again = FrameClips(data, clip_frames=3, block_frames=3, seed=7)
    assert again.data is clips.data, "a second instance over the same data loaded its own copy"
    again.load_state_dict({**clips.state_dict(), "batches": 2})
    assert torch.equal(again.next_batch(4)["frames"], seen[2]["frames"])
    with pytest.raises(ValueError, match="frames held on the device"):
        ClipDataset(data, 3, split="train").load_state_dict(clips.state_dict())


def test_autoencoder_on_device_frames_resumes_bit_for_bit(data, tmp_path):
    cfg = preset("tiny")

    def trainer(out, cls=Trainer, **kw):
        opts = options(out, max_steps=4, extra={"stats_frames": 6}, **kw)
        make = lambda clip_frames, seed: FrameClips(data, clip_frames, 3, seed=seed)  # noqa: E731
        return cls(AutoencoderStage(cfg, opts, CPU), make, opts, CPU, progress=False)

    straight, resumed = run_straight_and_resumed(trainer, tmp_path)
    a, b = straight.stage.autoencoder.state_dict(), resumed.stage.autoencoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_autoencoder_frames_on_device_from_the_command_line(data, tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "autoencoder", "--preset", "tiny", "--data", str(data), "--out", str(out), "--max-steps", "2",
               "--batch-size", "2", "--stats-frames", "6", "--no-progress", "--device", "cpu",
               "--frames-on-device", "on"])
    assert rc == 0 and (out / "checkpoint" / "autoencoder.safetensors").is_file()
    _, rank_state = ckpt.load_training_state(out / "checkpoint", 0)
    assert rank_state["data"]["kind"] == "frame-clips", "the run did not train from the frames on the device"


def test_frames_go_on_the_device_only_where_asked_or_on_cuda(data):
    from argparse import Namespace

    from worldmodel.cli.train import frames_on_device_of

    cfg = preset("tiny")
    args = lambda choice: Namespace(frames_on_device=choice, data=str(data), split="train")  # noqa: E731
    assert frames_on_device_of(args("on"), CPU, cfg) is True
    assert frames_on_device_of(args("off"), CPU, cfg) is False
    assert frames_on_device_of(args("auto"), CPU, cfg) is False, "auto holds the frames on CUDA only"
    assert frames_on_device_of(Namespace(data=str(data), split="train"), CPU, cfg) is False  # stages without the flag
