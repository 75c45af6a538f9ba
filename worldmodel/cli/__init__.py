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
