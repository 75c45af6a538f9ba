"""Stands in for `python3 -m worldmodel.cli` under DRY_RUN=1: parses the command line with the real
magworld parser (every subcommand, stage and option) and runs nothing. On success appends
`ARGS OK: <subcommand> <action>` to the file $DRY_RUN_LOG (scripts filter their commands' output,
so a file is where the record survives); on a bad command line argparse says why and exits 2."""

import os
import sys

from worldmodel.cli import build_parser

build_parser().parse_args(sys.argv[1:])
line = "ARGS OK: " + " ".join(sys.argv[1:3])
if os.environ.get("DRY_RUN_LOG"):
    with open(os.environ["DRY_RUN_LOG"], "a") as f:
        f.write(line + "\n")
print(line, file=sys.stderr)
