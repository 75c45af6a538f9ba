# Stands in for `python3 -m worldmodel.cli` under DRY_RUN=1 (scripts/gpu/common.sh): records the
# command line, shell-quoted, one per line in $DRY_CMDS, and runs nothing. common.sh parses every
# recorded line in one process when the script exits (check_args.py --commands): one Python start
# per script instead of one per command.
# The line goes out in one write: scripts start commands in the background (`$MW … &`), and two
# writes per line let two such commands interleave into one unparsable line (CI failed so on
# session7b.sh). One O_APPEND write of a short line is not split.
line=$(printf '%q ' "$@")
printf '%s\n' "$line" >> "$DRY_CMDS"
