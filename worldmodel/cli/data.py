"""`magworld data`: placeholder until issue #3 lands."""

from worldmodel.cli.common import not_built


def register(sub):
    parser = sub.add_parser("data", help="(not built yet: issue #3)", description="Not built yet: issue #3.")
    parser.set_defaults(func=not_built("data", 3))
