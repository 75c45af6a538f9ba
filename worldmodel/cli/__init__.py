"""The `magworld` command: one entry point, one module per subcommand.

Each module in SUBCOMMANDS exposes `register(subparsers)`, which adds its parser and sets
`func` (called with the parsed args; returns an exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ["data", "train", "eval", "bench", "export", "serve", "play"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magworld",
        description="magworld: a real-time world model with long-term compressed memory (MAG).",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"worldmodel.cli.{name}").register(sub)
    return parser


def _version() -> str:
    from worldmodel import __version__

    return f"magworld {__version__}"


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the input is wrong" (a path, a value, a stale or broken checkpoint),
    which the `magworld` command reports in one line instead of a traceback."""
    from export.manifest import ExportError
    from worldmodel.train.checkpoint import CheckpointError

    return (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, CheckpointError, ExportError)


def console() -> int:
    """The `magworld` console command: `main` with a user's mistake reported as one line on
    stderr and exit status 2. MAGWORLD_DEBUG=1 shows the traceback instead."""
    import os

    try:
        return main()
    except BrokenPipeError:
        # the reader of stdout went away (`magworld ... | head`): what was written stands; end
        # quietly, without the interpreter's second complaint when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:
        if os.environ.get("MAGWORLD_DEBUG") or not isinstance(e, user_errors()):
            raise
        print(f"magworld: error: {e}", file=sys.stderr)
        print("magworld: (MAGWORLD_DEBUG=1 shows where it came from)", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
