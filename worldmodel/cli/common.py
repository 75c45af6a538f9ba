"""Small helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
import importlib
import sys


def not_built(what: str, issue: int):
    """A `func` for a subcommand that a later issue owns: says so and fails, never pretends."""

    def run(_args: argparse.Namespace) -> int:
        print(f"magworld {what}: not built yet (tracked in issue #{issue}).", file=sys.stderr)
        return 2

    return run


def register_group(sub, name: str, help: str, description: str, modules: list[str]):
    """A subcommand with its own sub-subcommands, each registered by a module's `register`."""
    parser = sub.add_parser(name, help=help, description=description)
    inner = parser.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    inner.required = True
    for module in modules:
        importlib.import_module(module).register(inner)
    return parser
