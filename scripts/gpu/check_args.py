"""Parses magworld command lines with the real magworld parser (every subcommand, stage and
option) and runs nothing: the DRY_RUN=1 check of the GPU scripts (scripts/gpu/common.sh).

    check_args.py ARGS...            one command line
    check_args.py --commands FILE    every line of FILE (shell-quoted, as dry_mw.sh records them)

Each command line that parses appends `ARGS OK: <subcommand> <action>` to the file $DRY_RUN_LOG
(scripts filter their commands' output, so a file is where the record survives) and says so on
stderr; one that does not parse gets argparse's reason, and the exit status is 2."""

import os
import shlex
import sys

from worldmodel.cli import build_parser


def check(parser, argv: list[str]) -> bool:
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        if e.code:
            print(f"dry run: this command line does not parse: magworld {shlex.join(argv)}", file=sys.stderr)
            return False
    line = "ARGS OK: " + " ".join(argv[:2])
    if os.environ.get("DRY_RUN_LOG"):
        with open(os.environ["DRY_RUN_LOG"], "a") as f:
            f.write(line + "\n")
    print(line, file=sys.stderr)
    return True


def main(args: list[str]) -> int:
    parser = build_parser()
    if args[:1] == ["--commands"]:
        with open(args[1]) as f:
            lines = [shlex.split(line) for line in f if line.strip()]
        ok = [check(parser, argv) for argv in lines]
        return 0 if all(ok) else 2
    return 0 if check(parser, args) else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
