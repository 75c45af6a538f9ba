"""`magworld export`: placeholder until issue #8 lands."""

from worldmodel.cli.common import not_built


def register(sub):
    parser = sub.add_parser("export", help="(not built yet: issue #8)", description="Not built yet: issue #8.")
    parser.set_defaults(func=not_built("export", 8))
