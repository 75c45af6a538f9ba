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
