"""A tiny random checkpoint and its exports, made once per test process (an export takes seconds)."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from worldmodel.actions import ACTION_HIGH, ACTION_LOW, POSE_DIM

ROOT = Path(tempfile.mkdtemp(prefix="magworld-export-tests-"))
atexit.register(shutil.rmtree, ROOT, True)


def make_checkpoint(directory, seed=0, **memory):
    from worldmodel.bundle import WorldModel
    from worldmodel.config import preset

    cfg = preset("tiny")
    for k, v in memory.items():
        setattr(cfg.memory, k, v)
    WorldModel.random(cfg, seed=seed).save(directory)
    return Path(directory)


def checkpoint(strategy="mag") -> Path:
    return _checkpoint(strategy)


def exported(strategy="mag", precision="fp32") -> Path:
    return _exported(strategy, precision)


@functools.cache  # (called with positional arguments only, so each one is made once)
def _checkpoint(strategy) -> Path:
    return make_checkpoint(ROOT / f"ckpt-{strategy}", strategy=strategy)


@functools.cache
def _exported(strategy, precision) -> Path:
    from export.onnx_export import export_onnx

    out = ROOT / f"export-{strategy}-{precision}"
    export_onnx(checkpoint(strategy), out, precision)
    return out


def copy_of(path: Path, name: str) -> Path:
    dst = ROOT / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(path, dst)
    return dst


def random_block(rng, bf=3):
    actions = (ACTION_LOW + (ACTION_HIGH - ACTION_LOW) * rng.random((bf, len(ACTION_LOW)))).astype(np.float32)
    poses = np.zeros((bf, POSE_DIM), np.float32)
    poses[:, :2] = rng.normal(size=(bf, 2)) * 300
    poses[:, 3] = rng.uniform(0, 360, bf)
    return actions, poses
