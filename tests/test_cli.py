"""The installed `magworld` command and every subcommand explain themselves."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worldmodel.cli import SUBCOMMANDS, build_parser


def magworld_exe():
    exe = Path(sys.executable).with_name("magworld")
    if not exe.exists():
        pytest.fail(f"the console script is not installed next to {sys.executable}: run pip install -e .")
    return str(exe)


def run(*args):
    return subprocess.run([magworld_exe(), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_top_level_help_lists_every_subcommand():
    out = run("--help")
    assert out.returncode == 0, out.stderr
    for name in SUBCOMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name):
    out = run(name, "--help")
    assert out.returncode == 0, out.stderr
    assert f"magworld {name}" in out.stdout


def test_every_nested_action_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        nested = [a for a in p._actions if a.dest.endswith("_command")]
        for action in nested:
            for inner_name, inner in action.choices.items():
                text = inner.format_help()
                assert inner_name in text and len(text) > 40, f"magworld {name} {inner_name} has no help"


def test_the_console_command_reports_a_users_mistake_in_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from worldmodel.cli import console

    monkeypatch.delenv("MAGWORLD_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["magworld", "eval", "memory", "--checkpoint", str(tmp_path / "nope"),
                                      "--data", str(tmp_path), "--device", "cpu"])
    assert console() == 2
    err = capsys.readouterr().err
    assert "magworld: error: no checkpoint at" in err and "Traceback" not in err
    monkeypatch.setenv("MAGWORLD_DEBUG", "1")
    with pytest.raises(Exception, match="no checkpoint at"):
        console()


def test_a_closed_stdout_ends_the_command_quietly():
    """`magworld ... | head` in the device scripts: the reader goes away while the command still
    prints. The command ends with status 141 and no traceback (session 15's `eval autoencoder`
    printed one after its table). A stand-in for `main` prints more than a pipe holds."""
    code = ("import sys, worldmodel.cli as cli; cli.main = lambda: print('frame\\n' * 100_000); "
            "sys.exit(cli.console())")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("content, says", [
    ('[[0, ["w"]],', "is not valid JSON: Expecting value: line 1 column 13"),
    ('{"ticks": []}', "expected a JSON list of [tick, [key names]], e.g. [[0, [\"w\"]]"),
    ('[[0, ["w"]], [12]]', "entry 1 is [12]; expected a JSON list"),
    ('[[-3, ["w"]]]', "entry 0: the tick must be a whole number >= 0, got -3"),
    ('[[0, "w"]]', 'entry 0: the keys must be a list of key names, got "w"'),
    ('[[0, ["lefty"]]]', "entry 0: unknown key 'lefty'; keys that do something: a, d,"),
])
def test_play_explains_a_bad_script_in_one_line(tmp_path, capsys, content, says):
    from worldmodel.cli import main

    script = tmp_path / "script.json"
    script.write_text(content)
    assert main(["play", "--script", str(script)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"magworld play: --script {script}") and says in err and "\n" not in err, err


def test_play_reads_a_good_script(tmp_path):
    from worldmodel.cli.play import load_script

    path = tmp_path / "script.json"
    path.write_text('[[0, ["w", "left"]], [6, []], [9, ["escape"]]]')
    assert load_script(str(path)) == [(0, ["w", "left"]), (6, []), (9, ["escape"])]


@pytest.mark.parametrize("fps", ["-3", "0", "nan"])
def test_play_needs_a_positive_frame_rate(capsys, fps):
    from worldmodel.cli import main

    assert main(["play", "--fps", fps]) == 2
    assert "--fps must be a positive number of frames per second" in capsys.readouterr().err


def test_export_of_a_missing_checkpoint_says_it_is_missing(tmp_path, capsys):
    from worldmodel.cli import main

    assert main(["export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"magworld export: cannot export {tmp_path / 'nope'}: no checkpoint at "), err
    assert "does not match" not in err and "does not fit" not in err


def test_bench_train_runs_on_the_tiny_preset_with_its_reference_row(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "worldmodel.cli", "bench", "train", "--preset", "tiny",
                          "--device", "cpu", "--steps", "2", "--warmup", "1", "--batch-size", "2",
                          "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [r["run"] for r in result["rows"]] == ["magworld teacher", "reference transformer"]
    for row in result["rows"]:
        assert row["steps_per_s"] > 0 and row["tflops"] > 0
    assert "machine" in result and "reference" in run.stdout


def test_bench_train_times_the_autoencoder_in_both_layouts_with_counted_flops(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "worldmodel.cli", "bench", "train", "--stage", "autoencoder",
                          "--preset", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--batch-size", "2",
                          "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [r["run"] for r in result["rows"]] == ["autoencoder, default", "autoencoder, channels-last"]
    flops = {r["gflop_per_step"] for r in result["rows"]}
    assert len(flops) == 1 and flops.pop() > 0  # the same work in either layout, counted
    assert all(r["steps_per_s"] > 0 and r["frames_per_s"] > 0 for r in result["rows"])
    bad = subprocess.run([sys.executable, "-m", "worldmodel.cli", "bench", "train", "--stage", "autoencoder",
                          "--preset", "tiny", "--device", "cpu", "--layouts", "nhwc"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "--layouts: unknown nhwc" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_train_splits_a_self_forcing_step_into_its_phases(tmp_path):
    """`--stage generator` (MAG stage 2 with history): steps/s, one cycle's phases, the history
    table among them, and the operator count; the phases are real times of real calls."""
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "worldmodel.cli", "bench", "train", "--stage", "generator",
                          "--preset", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "2", "--batch-size", "2",
                          "--clip-blocks", "4", "--history-blocks", "3", "--critic-steps", "2", "--count-operators",
                          "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["steps_per_s"] > 0 and result["generator_updates_per_s"] == result["steps_per_s"] / 2
    phases = result["phase_seconds_per_step"]
    for name in ("history slot table", "rollout of a generator update", "rollout of a critic step", "score: teacher",
                 "score: fake", "backward + step: generator", "backward + step: fake_score"):
        assert phases[name] > 0, name
    # the phases are part of a step: together no more than a few steps' worth
    assert sum(phases.values()) < 5 / result["steps_per_s"]
    ops = result["operators_per_step"]
    assert ops["generator update"] > ops["fake score only"] > 0
    assert "after 3 blocks of history" in result["batch"] and "rollout of a critic step" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "worldmodel.cli", "bench", "train", "--stage", "dmd",
                          "--preset", "tiny", "--device", "cpu", "--history-blocks", "3"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "--history-blocks is stage generator's" in bad.stderr and "Traceback" not in bad.stderr
