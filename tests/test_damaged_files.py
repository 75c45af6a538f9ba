"""A damaged checkpoint directory fails at load in one line naming the file and the problem,
before anything large is allocated; the CLI and the server say that line and stop (exit 2)."""

import json
import resource
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from worldmodel.bundle import WorldModel
from worldmodel.cli import main
from worldmodel.config import preset
from worldmodel.train import checkpoint as ckpt

WEIGHTS = "generator.safetensors"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good") / "ckpt"
    WorldModel.random(preset("tiny")).save(d)
    return d


def _header(d):
    raw = (d / WEIGHTS).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(d, header, data):
    h = json.dumps(header).encode()
    (d / WEIGHTS).write_bytes(struct.pack("<Q", len(h)) + h + data)


def _first(header):
    return next(k for k in header if k != "__metadata__")


def _edit_tensor(d, **spec):
    header, data = _header(d)
    header[_first(header)].update(spec)
    _write(d, header, data)


def _grow_last_tensor(d):
    """Shape and offsets of the last tensor agree with each other but run past the data."""
    header, data = _header(d)
    name = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    begin = header[name]["data_offsets"][0]
    header[name].update(shape=[10**6], data_offsets=[begin, begin + 4 * 10**6])
    _write(d, header, data)


def _config(d, section, key, value):
    c = json.loads((d / "config.json").read_text())
    c[section][key] = value
    (d / "config.json").write_text(json.dumps(c))


def _nan_weight(d):
    state = ckpt.load_weights(d, "generator")
    next(t for t in state.values() if t.is_floating_point()).view(-1)[0] = float("nan")
    ckpt.save_weights(d, "generator", state)


def _sharded(d, breaker):
    state = ckpt.load_weights(d, "generator")
    (d / WEIGHTS).unlink()
    ckpt.save_weights(d, "generator", state, max_file_bytes=40_000)
    breaker(d / "generator.index.json")


def _index(path, fn):
    index = json.loads(path.read_text())
    fn(index)
    path.write_text(json.dumps(index))


# name -> (how to damage a copy of a good checkpoint, the file named, words of the problem)
CASES = {
    "empty weights": (lambda d: (d / WEIGHTS).write_bytes(b""), WEIGHTS, "the file is empty"),
    "3-byte weights": (lambda d: (d / WEIGHTS).write_bytes(b"abc"), WEIGHTS, "shorter than the 8-byte header"),
    "truncated weights": (lambda d: (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:-1000]), WEIGHTS,
                          "past its end"),
    "huge header length": (lambda d: (d / WEIGHTS).write_bytes(struct.pack("<Q", 2**63) + (d / WEIGHTS).read_bytes()[8:]),
                           WEIGHTS, "header length 9223372036854775808 exceeds"),
    "header not JSON": (lambda d: (d / WEIGHTS).write_bytes(struct.pack("<Q", 4) + b"{{{{" + b"\0" * 16), WEIGHTS,
                        "not JSON"),
    "random bytes": (lambda d: (d / WEIGHTS).write_bytes(np.random.default_rng(0).bytes(5000)), WEIGHTS, "header length"),
    "shape overflow": (lambda d: _edit_tensor(d, shape=[2**62, 2**62]), WEIGHTS, "needs"),
    "negative dimension": (lambda d: _edit_tensor(d, shape=[-1]), WEIGHTS, "integers >= 0"),
    "offsets past the end": (_grow_last_tensor, WEIGHTS, "past its end"),
    "offsets disagree with shape": (lambda d: _edit_tensor(d, data_offsets=[0, 10**9]), WEIGHTS, "needs"),
    "unknown dtype": (lambda d: _edit_tensor(d, dtype="F128"), WEIGHTS, "unknown dtype"),
    "NaN weight": (_nan_weight, WEIGHTS, "NaN or infinity"),
    "weights of another model": (lambda d: shutil.copy(d / "autoencoder.safetensors", d / WEIGHTS), "generator",
                                 "does not fit the model"),
    "shard index not JSON": (lambda d: _sharded(d, lambda p: p.write_text("{")), "generator.index.json", "not valid JSON"),
    "shard outside the directory": (lambda d: _sharded(d, lambda p: _index(p, lambda i: i["weight_map"].update(
        {k: "../../etc/passwd" for k in i["weight_map"]}))), "generator.index.json", "weight_map"),
    "shard missing": (lambda d: _sharded(d, lambda p: sorted(p.parent.glob("generator-00001-of-*"))[0].unlink()),
                      "generator-00001-of-", "missing"),
    "config not JSON": (lambda d: (d / "config.json").write_text("{not json"), "config.json", "not valid JSON"),
    "frame height 0": (lambda d: _config(d, "autoencoder", "frame_height", 0), "config.json",
                       "autoencoder.frame_height must be at least 1"),
    "width as a string": (lambda d: _config(d, "autoencoder", "frame_width", "32"), "config.json",
                          "autoencoder.frame_width must be an integer"),
    "frames the model cannot take": (lambda d: _config(d, "autoencoder", "frame_height", 48), "config.json",
                                     "but the model takes"),
    "capacity 10^9": (lambda d: (_config(d, "memory", "capacity_frames", 10**9)), "config.json",
                      "a session's memory of 1000000000 frames"),
    "huge frames": (lambda d: (_config(d, "autoencoder", "frame_height", 10**6), _config(d, "autoencoder", "frame_width", 10**6),
                               _config(d, "model", "latent_height", 125000), _config(d, "model", "latent_width", 125000)),
                    "config.json", "one block's activations"),
    "a million layers": (lambda d: _config(d, "model", "layers", 10**6), "config.json", "model.layers is 1000000"),
    # Fits in memory, but not the weights: refused from the file headers, before the 1 GB is allocated.
    "dim that does not match the weights": (lambda d: (_config(d, "model", "dim", 4096), _config(d, "model", "ffn_dim", 8192)),
                                            "generator", "does not fit the model"),
    "negative timestep": (lambda d: _config(d, "sampler", "timesteps", [1000, -5]), "config.json", "sampler.timesteps"),
}


@pytest.fixture(params=sorted(CASES))
def damaged(request, good, tmp_path):
    breaker, file, words = CASES[request.param]
    d = tmp_path / "ckpt"
    shutil.copytree(good, d)
    breaker(d)
    return d, file, words


def test_load_fails_in_one_line_naming_the_file_and_the_problem(damaged):
    d, file, words = damaged
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB
    with pytest.raises(ckpt.CheckpointError) as e:
        WorldModel.load(d)
    message = str(e.value)
    assert "\n" not in message and file in message and words in message, message
    # Nothing large was allocated (the mismatched dim alone would be ~1 GB of initialised weights).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100_000


def test_server_refuses_to_start_with_that_line(damaged, capsys):
    d, file, words = damaged
    assert main(["serve", "--checkpoint", str(d), "--device", "cpu", "--bind", "tcp://127.0.0.1:*"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and file in err[0] and words in err[0], err


def test_the_command_prints_one_line_and_no_traceback(good, tmp_path):
    d = tmp_path / "ckpt"
    shutil.copytree(good, d)
    CASES["truncated weights"][0](d)
    out = subprocess.run([sys.executable, "-m", "worldmodel.cli", "eval", "memory", "--checkpoint", str(d),
                          "--data", str(tmp_path), "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("magworld: error: ") and WEIGHTS in out.stderr.splitlines()[0]


def test_an_undamaged_checkpoint_still_loads(good):
    model = WorldModel.load(good)
    assert model.config == preset("tiny") and model.memory_model is not None


def test_an_undamaged_sharded_checkpoint_still_loads(good, tmp_path):
    d = tmp_path / "ckpt"
    shutil.copytree(good, d)
    _sharded(d, lambda p: None)
    assert len(list(d.glob("generator-*-of-*.safetensors"))) >= 2
    a, b = WorldModel.load(good).generator.state_dict(), WorldModel.load(d).generator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_damaged_export_manifest_is_one_line(tmp_path):
    from export.manifest import MANIFEST_FILE, ExportError, load_manifest

    for text in ("{", "[]", '{"format": "other"}'):
        (tmp_path / MANIFEST_FILE).write_text(text)
        with pytest.raises(ExportError) as e:
            load_manifest(tmp_path)
        assert MANIFEST_FILE in str(e.value) and "\n" not in str(e.value)
