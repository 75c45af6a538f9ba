"""The GPU session scripts waiting for device time are checked here, where time is cheap: every
magworld command line in them must parse with the real CLI (DRY_RUN=1 puts a parse-only stand-in
in place of `magworld`; see scripts/gpu/common.sh)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# script -> commands it must reach (so a dry run that stopped early is not taken for a pass)
PENDING = {
    "session6a.sh": ["data record", "data encode", "bench train", "train teacher"],
    "session6b.sh": ["data encode", "train teacher", "train autoencoder", "eval turns", "eval next-block"],
    "session6c.sh": ["data encode", "train teacher", "eval turns"],
    "session7a.sh": ["data encode", "train autoencoder", "train teacher", "train ode-init", "train memory",
                     "train package"],
    "session7b.sh": ["data encode", "train autoencoder", "train teacher", "train ode-init", "train memory",
                     "train package", "eval turns"],
    "session8a.sh": ["data encode", "train teacher", "eval turns", "eval next-block"],
    "session8b.sh": ["data encode", "train ode-init", "train memory", "train package", "eval turns",
                     "eval next-block"],
    "patch_ablation.sh": ["data encode", "train teacher", "eval turns"],
    "self_forcing.sh": ["data encode", "train dmd", "train memory", "train package", "eval rollout", "eval turns",
                        "eval next-block"],
    "speed.sh": ["bench generate", "bench serve"],
    "stage2.sh": ["data encode", "train generator", "train package", "eval history", "eval rollout", "eval turns",
                  "eval next-block"],
    "test.sh": [],
    "prepare.sh": ["data record", "data encode"],
    "session_ae_gan.sh": ["data record", "eval autoencoder", "train autoencoder"],
    "ae16.sh": ["data record", "bench train", "train autoencoder", "eval autoencoder"],
    "teacher16.sh": ["data encode", "train teacher", "eval turns"],
    "distil16.sh": ["data encode", "train ode-init", "train memory", "train package", "eval turns",
                    "eval next-block"],
    "memory_chain.sh": ["data revisit-bench", "train memory", "eval memory", "train generator", "train memorypack",
                        "train package", "eval revisit"],
}


# script with options -> commands that mode must reach
MODES = {
    "ae16.sh": ({"DECODER_ONLY": "1", "SKIP_BENCH": "1", "TEACHER_TOO": "1"},
                ["data encode", "train teacher", "eval next-block", "train autoencoder", "eval autoencoder"]),
}


def _dry_run(script, tmp_path, options=None):
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "RUNS": str(tmp_path / "runs"), "DATA": str(tmp_path / "data"), "EVAL": str(tmp_path / "evals"),
           "DRY_RUN_LOG": str(tmp_path / "parsed.txt"), **(options or {})}
    run = subprocess.run(["bash", f"scripts/gpu/{script}"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "error:" not in out and "usage:" not in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    log = tmp_path / "parsed.txt"
    return log.read_text() if log.exists() else ""  # test.sh runs no magworld command


@pytest.mark.parametrize("script", PENDING)
def test_every_magworld_command_of_a_pending_gpu_script_parses(script, tmp_path):
    parsed = _dry_run(script, tmp_path)
    for command in PENDING[script]:
        assert f"ARGS OK: {command}" in parsed, f"{script} never reached `magworld {command}`"


@pytest.mark.parametrize("script", MODES)
def test_the_options_of_a_gpu_script_reach_their_commands(script, tmp_path):
    options, commands = MODES[script]
    parsed = _dry_run(script, tmp_path, options)
    for command in commands:
        assert f"ARGS OK: {command}" in parsed, f"{script} with {options} never reached `magworld {command}`"
    assert "ARGS OK: bench train" not in parsed, "SKIP_BENCH=1 still ran the benchmark"


def test_a_command_line_that_does_not_parse_fails_the_dry_run(tmp_path):
    script = tmp_path / "bad.sh"
    script.write_text("source scripts/gpu/common.sh\nset +e\n$MW train teacher --no-such-option 1\n"
                      "$MW eval turns --cases 8\necho reached the end\n")
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "RUNS": str(tmp_path / "runs"), "DRY_RUN_LOG": str(tmp_path / "parsed.txt")}
    run = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "reached the end" in run.stdout  # the script ran on, the parse at exit failed
    assert "does not parse: magworld train teacher --no-such-option 1" in run.stderr
    assert (tmp_path / "parsed.txt").read_text() == "ARGS OK: eval turns\n"


def test_commands_started_in_the_background_are_recorded_one_per_line(tmp_path):
    # Scripts start training in the background (`$MW train … &`); the dry run must record each of
    # those command lines whole, never two interleaved into one (CI once failed so on session7b.sh).
    record = tmp_path / "commands.txt"
    record.touch()
    args = " ".join(f"--option-{i} value-{i}" for i in range(40))
    script = "".join(f"bash scripts/gpu/dry_mw.sh cmd{n} {args} &\n" for n in range(32)) + "wait\n"
    subprocess.run(["bash", "-c", script], cwd=ROOT, env={**os.environ, "DRY_CMDS": str(record)}, check=True,
                   timeout=120)
    lines = record.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(f"cmd{n}" for n in range(32))
    assert all(line.split()[1:] == args.split() for line in lines)


def test_park_moves_checkpoints_aside_and_back_and_sizes_what_would_travel(tmp_path):
    import shutil

    repo = tmp_path / "repo"
    (repo / "checkpoints" / "big").mkdir(parents=True)
    (repo / "scripts" / "gpu").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "gpu" / "park.sh", repo / "scripts" / "gpu" / "park.sh")
    (repo / "checkpoints" / "big" / "w.bin").write_bytes(b"\0" * (65 * 2**20))  # over the limit alone
    (repo / "small.txt").write_text("x")
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", ".")
    park = lambda *a: subprocess.run(["bash", "scripts/gpu/park.sh", *a], cwd=repo, capture_output=True,  # noqa: E731
                                     text=True, env={**os.environ, "PARK": str(tmp_path / "parked")})
    too_big = park("size")
    assert too_big.returncode != 0 and "TOO LARGE" in too_big.stdout
    assert park("out", "checkpoints/big").returncode == 0 and not (repo / "checkpoints" / "big").exists()
    fits = park("size")
    assert fits.returncode == 0 and "fits" in fits.stdout
    assert park("back").returncode == 0 and (repo / "checkpoints" / "big" / "w.bin").stat().st_size == 65 * 2**20
    missing = park("out", "nothing")
    assert missing.returncode != 0 and "park: no nothing here" in missing.stderr
