"""`magworld play`: placeholder until issue #7 lands."""

from worldmodel.cli.common import not_built


def register(sub):
    parser = sub.add_parser("play", help="(not built yet: issue #7)", description="Not built yet: issue #7.")
    parser.set_defaults(func=not_built("play", 7))
