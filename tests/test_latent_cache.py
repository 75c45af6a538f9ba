"""The latent cache matches on-the-fly encoding, is rebuilt when the encoder or the data change (not for a decoder fine-tune),
and the device-resident clips drawn from it are block-aligned, deterministic and resume exactly."""

import shutil

import numpy as np
import pytest
import torch

from train_helpers import options, run_straight_and_resumed, save_tiny_autoencoder
from worldmodel.autoencoder import channels_first, load_autoencoder
from worldmodel.config import preset
from worldmodel.data import latent_cache
from worldmodel.data.latent_clips import LatentClips
from worldmodel.data.shards import ShardWriter, write_dataset_meta
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.distributed import DistInfo
from worldmodel.train.stage_teacher import TeacherStage
from worldmodel.train.trainer import Trainer

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
A = preset("tiny").autoencoder


def _write(root, lengths, shard, seed):
    g = np.random.default_rng(seed)
    w = ShardWriter(root, shard)
    for e, n in enumerate(lengths):
        frames = g.integers(0, 256, (n, A.frame_height, A.frame_width, 3), dtype=np.uint8)
        idx = np.arange(n, dtype=np.float32)
        actions = np.zeros((n, 4), np.float32)
        poses = np.zeros((n, 5), np.float32)
        poses[:, 0] = 1000 * (10 * seed + e) + idx  # x says which episode and frame a row came from
        w.add_episode(frames, actions, poses, scene=e % 4, map=f"user.wad:M{e}", split="train")
    w.close()


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    write_dataset_meta(root, {"width": A.frame_width, "height": A.frame_height, "frame_skip": 2, "fps": 17.5})
    _write(root, [20, 13], "s0", 0)
    _write(root, [31], "s1", 1)
    return root


@pytest.fixture
def ae(tmp_path):
    return save_tiny_autoencoder(tmp_path / "ae")


def test_cache_matches_encoding_on_the_fly(data, ae):
    directory = latent_cache.build(data, ae, progress=False)
    assert latent_cache.is_current(data, ae)
    latents, offsets = latent_cache.load(data, ae)
    assert latents.shape == (64, A.latent_channels, A.latent_height, A.latent_width)
    model = load_autoencoder(ae)
    frames = np.load(data / "shards" / "s1" / "frames.npy")
    with torch.no_grad():
        direct = model.encode(channels_first(torch.from_numpy(frames))).numpy()
    cached = np.asarray(latents[offsets["s1"]:offsets["s1"] + 31], dtype=np.float32)
    scale = np.abs(direct).max()
    assert np.abs(cached - direct).max() < 2e-3 * max(scale, 1.0)  # float16 storage
    assert directory.name == latent_cache.autoencoder_key(ae)[0]


def test_cache_is_rebuilt_when_the_autoencoder_or_the_data_change(data, ae, tmp_path):
    first = latent_cache.build(data, ae, progress=False)
    before = np.array(latent_cache.load(data, ae)[0])
    # another autoencoder: another key, never the stale cache
    other = tmp_path / "ae2" / "checkpoint"
    shutil.copytree(ae / "checkpoint", other)
    weights = ckpt.load_weights(other, "autoencoder")
    weights = {k: (v + 0.05 if v.is_floating_point() and "weight" in k else v) for k, v in weights.items()}
    (other / "autoencoder.safetensors").unlink()
    ckpt.save_weights(other, "autoencoder", weights)
    assert not latent_cache.is_current(data, other)
    second = latent_cache.build(data, other, progress=False)
    assert second != first and not np.array_equal(np.array(latent_cache.load(data, other)[0]), before)
    # only the decoder changed (a --decoder-only fine-tune): the latents, and so the cache, stay
    tuned = tmp_path / "ae3" / "checkpoint"
    shutil.copytree(ae / "checkpoint", tuned)
    weights = ckpt.load_weights(tuned, "autoencoder")
    weights = {k: (v + 0.05 if k.startswith("decoder.") and v.is_floating_point() else v) for k, v in weights.items()}
    (tuned / "autoencoder.safetensors").unlink()
    ckpt.save_weights(tuned, "autoencoder", weights)
    assert latent_cache.autoencoder_key(tuned) == latent_cache.autoencoder_key(ae)
    assert latent_cache.is_current(data, tuned) and latent_cache.cache_path(data, tuned) == first
    # the same encoder stored in bf16 (a shipped checkpoint) and as its float32 values (the run
    # it came from): the same latents, so the same cache; one encoder weight changed is another cache
    stored = tmp_path / "ae4" / "checkpoint"
    shutil.copytree(ae / "checkpoint", stored)
    half = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in ckpt.load_weights(stored, "autoencoder").items()}
    (stored / "autoencoder.safetensors").unlink()
    ckpt.save_weights(stored, "autoencoder", half)
    upcast = tmp_path / "ae5" / "checkpoint"
    shutil.copytree(stored, upcast)
    (upcast / "autoencoder.safetensors").unlink()
    ckpt.save_weights(upcast, "autoencoder", {k: (v.float() if v.is_floating_point() else v) for k, v in half.items()})
    assert latent_cache.autoencoder_key(stored) == latent_cache.autoencoder_key(upcast) != latent_cache.autoencoder_key(ae)
    nudged = tmp_path / "ae6" / "checkpoint"
    shutil.copytree(stored, nudged)
    (nudged / "autoencoder.safetensors").unlink()
    name = next(k for k, v in half.items() if k.startswith("encoder.") and v.is_floating_point() and v.numel() > 1)
    moved = half[name].clone()
    moved.view(-1)[0] += 0.0625
    assert not torch.equal(moved, half[name])
    ckpt.save_weights(nudged, "autoencoder", {**half, name: moved})
    assert latent_cache.autoencoder_key(nudged) != latent_cache.autoencoder_key(stored)
    # a shard added: the cache no longer describes the data
    _write(data, [9], "s2", 2)
    assert not latent_cache.is_current(data, ae)
    with pytest.raises(FileNotFoundError, match="data encode"):
        latent_cache.load(data, ae)
    latent_cache.build(data, ae, progress=False)
    assert latent_cache.load(data, ae)[0].shape[0] == 73


def test_clips_are_block_aligned_inside_episodes_and_resume_exactly(data, ae):
    latent_cache.build(data, ae, progress=False)
    clips = LatentClips(data, ae, clip_frames=6, block_frames=3, seed=5)
    assert len(clips) == len(range(0, 20 - 6 + 1, 3)) + len(range(0, 13 - 6 + 1, 3)) + len(range(0, 31 - 6 + 1, 3))
    seen = []
    for _ in range(6):
        b = clips.next_batch(4)
        assert b["latents"].shape == (4, 6, A.latent_channels, A.latent_height, A.latent_width)
        x = b["poses"][..., 0]
        episode, frame = (x // 1000).long(), x % 1000
        assert (episode == episode[:, :1]).all(), "a clip crossed an episode boundary"
        assert torch.equal(frame - frame[:, :1], torch.arange(6.0).expand(4, 6)), "frames are not consecutive"
        assert (frame[:, 0] % 3 == 0).all(), "a clip does not start on a block"
        seen.append(b)
    again = LatentClips(data, ae, clip_frames=6, block_frames=3, seed=5)
    again.load_state_dict({**clips.state_dict(), "batches": 3})
    assert torch.equal(again.next_batch(4)["latents"], seen[3]["latents"])
    with pytest.raises(ValueError, match="latent cache"):
        from worldmodel.data.dataset import ClipDataset

        ClipDataset(data, 6, split="train").load_state_dict(clips.state_dict())


def test_teacher_on_the_latent_cache_resumes_bit_for_bit(data, ae, tmp_path):
    latent_cache.build(data, ae, progress=False)
    cfg = preset("tiny")

    def trainer(out, cls=Trainer, **kw):
        opts = options(out, extra={"autoencoder": str(ae), "clip_blocks": 2, "sigma_sampling": "logit-normal",
                                   "train_shift": 3.0, "context_noise": 0.3, "context_noise_prob": 0.5}, **kw)
        make = lambda clip_frames, seed: LatentClips(data, ae, clip_frames, 3, seed=seed)  # noqa: E731
        return cls(TeacherStage(cfg, opts, CPU), make, opts, CPU, progress=False)

    straight, resumed = run_straight_and_resumed(trainer, tmp_path)
    a, b = straight.stage.network.state_dict(), resumed.stage.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
