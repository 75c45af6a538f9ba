# Stands in for `python3 -m worldmodel.cli` under DRY_RUN=1 (scripts/gpu/common.sh): records the
# command line, shell-quoted, one per line in $DRY_CMDS, and runs nothing. common.sh parses every
# recorded line in one process when the script exits (check_args.py --commands): one Python start
# per script instead of one per command.
printf '%q ' "$@" >> "$DRY_CMDS"
printf '\n' >> "$DRY_CMDS"
