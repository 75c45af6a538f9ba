"""`magworld serve`: placeholder until issue #6 lands."""

from worldmodel.cli.common import not_built


def register(sub):
    parser = sub.add_parser("serve", help="(not built yet: issue #6)", description="Not built yet: issue #6.")
    parser.set_defaults(func=not_built("serve", 6))
