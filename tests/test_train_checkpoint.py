"""Checkpoints: safetensors + JSON round trips, shards, atomic replacement, explained mismatches."""

import json
import random

import numpy as np
import pytest
import torch

from worldmodel.config import apply_overrides
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.ema import EMA
from worldmodel.train.tree_io import flatten, unflatten


def test_weights_round_trip_in_one_file(tmp_path):
    state = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.ones(2, dtype=torch.bfloat16)}
    ckpt.save_weights(tmp_path, "net", state)
    assert (tmp_path / "net.safetensors").is_file()
    back = ckpt.load_weights(tmp_path, "net")
    assert all(torch.equal(back[k], v) for k, v in state.items()) and set(back) == set(state)


def test_large_weights_are_sharded_under_the_file_limit_and_reassembled(tmp_path):
    state = {"big": torch.randn(40, 50), "small": torch.randn(10), "mid": torch.randn(300)}
    limit = 1024  # bytes: "big" (8000 B) must be split, the rest packed into shards
    ckpt.save_weights(tmp_path, "net", state, max_file_bytes=limit)
    shards = sorted(tmp_path.glob("net-*-of-*.safetensors"))
    assert len(shards) > 1 and not (tmp_path / "net.safetensors").exists()
    # Each shard holds at most `limit` bytes of tensor data (plus a small header).
    assert all(p.stat().st_size <= limit + 1024 for p in shards)
    back = ckpt.load_weights(tmp_path, "net")
    assert set(back) == set(state) and all(torch.equal(back[k], v) for k, v in state.items())
    # Saving a small state again replaces the shards by one file.
    ckpt.save_weights(tmp_path, "net", {"x": torch.zeros(2)})
    assert not list(tmp_path.glob("net-*-of-*.safetensors"))
    assert set(ckpt.load_weights(tmp_path, "net")) == {"x"}


def test_no_pickle_anywhere_in_a_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ckpt.save_training_state(tmp_path, {"opt": opt.state_dict()}, {"rng": ckpt.capture_rng_state()}, rank=0)
    files = {p.suffix for p in (tmp_path / "training").iterdir()}
    assert files == {".json", ".safetensors"}


def test_nested_state_round_trips_exactly():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), betas=(0.9, 0.99))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tree = {"opt": opt.state_dict(), "rng": ckpt.capture_rng_state(), "pos": {"epoch": 2, "arr": np.arange(3)}}
    skeleton, tensors = flatten(tree, "s")
    back = unflatten(json.loads(json.dumps(skeleton)), tensors)
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], tree["opt"]["state"][0]["exp_avg"])
    assert np.array_equal(back["pos"]["arr"], np.arange(3))
    # Restoring the RNG states reproduces every stream.
    ckpt.restore_rng_state(back["rng"])
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.restore_rng_state(back["rng"])
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())


def write_checkpoint(directory, tiny, value):
    with ckpt.atomic_directory(directory) as tmp:
        ckpt.save_config(tmp, tiny)
        ckpt.save_weights(tmp, "net", {"w": torch.full((4,), float(value))})


def test_a_crash_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path, tiny):
    target = tmp_path / "checkpoint"
    write_checkpoint(target, tiny, 1.0)
    with pytest.raises(RuntimeError, match="disk on fire"):
        with ckpt.atomic_directory(target) as tmp:
            ckpt.save_config(tmp, tiny)
            ckpt.save_weights(tmp, "net", {"w": torch.full((4,), 2.0)})
            raise RuntimeError("disk on fire")
    found = ckpt.resolve_checkpoint(tmp_path)
    assert torch.equal(ckpt.load_weights(found, "net")["w"], torch.ones(4))
    write_checkpoint(target, tiny, 3.0)  # and the next save still works
    assert torch.equal(ckpt.load_weights(ckpt.resolve_checkpoint(tmp_path), "net")["w"], torch.full((4,), 3.0))


def test_a_crash_between_the_two_renames_is_recovered_from_old(tmp_path, tiny, monkeypatch):
    target = tmp_path / "checkpoint"
    write_checkpoint(target, tiny, 1.0)
    real_replace = ckpt.os.replace

    def crash_on_swap_in(src, dst):
        if str(src).endswith("checkpoint.tmp"):
            raise OSError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_on_swap_in)
    with pytest.raises(OSError):
        write_checkpoint(target, tiny, 2.0)
    monkeypatch.undo()
    found = ckpt.resolve_checkpoint(tmp_path)
    assert found.name == "checkpoint.old"
    assert torch.equal(ckpt.load_weights(found, "net")["w"], torch.ones(4))


def test_config_mismatch_names_the_field(tmp_path, tiny):
    ckpt.save_config(tmp_path, tiny)
    other = apply_overrides(tiny, ["autoencoder.latent_channels=6"])
    with pytest.raises(ckpt.CheckpointError, match=r"autoencoder\.latent_channels: checkpoint has 4, this run has 6"):
        ckpt.check_config(tmp_path, other)
    ckpt.check_config(tmp_path, tiny)


def test_loading_weights_of_another_shape_says_so(tmp_path):
    ckpt.save_weights(tmp_path, "net", torch.nn.Linear(3, 2).state_dict())
    with pytest.raises(ckpt.CheckpointError, match=r"weight: checkpoint \(2, 3\), model \(5, 3\)"):
        ckpt.load_module(torch.nn.Linear(3, 5), tmp_path, "net")
    with pytest.raises(ckpt.CheckpointError, match="no weights for 'other'"):
        ckpt.load_weights(tmp_path, "other")


def test_ema_follows_the_parameters_and_restores():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 1/10) = 0.1
    assert torch.allclose(ema.shadow["weight"], start + 0.9)
    copy = torch.nn.Linear(2, 1)
    ema.copy_to(copy)
    assert torch.allclose(copy.weight, start + 0.9)
    other = EMA(model, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and torch.equal(other.shadow["weight"], ema.shadow["weight"])
