"""`magworld train`: placeholder until issue #4 lands."""

from worldmodel.cli.common import not_built


def register(sub):
    parser = sub.add_parser("train", help="(not built yet: issue #4)", description="Not built yet: issue #4.")
    parser.set_defaults(func=not_built("train", 4))
