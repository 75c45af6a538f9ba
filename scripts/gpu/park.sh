# Here (not on the device): make the working tree fit the 64 MiB that travels to the device.
#   bash scripts/gpu/park.sh size [CARRY...]   what would travel (tracked and untracked files that
#                                              git does not ignore, plus the carried folders) vs 64 MiB
#   bash scripts/gpu/park.sh out PATH...       move checkpoint files or folders aside (to $PARK,
#                                              default ../parked), keeping their paths
#   bash scripts/gpu/park.sh back              put everything parked back
# Each GPU script's header says what it needs moved out. Put things back before committing:
# `git status` shows parked checkpoints as deleted.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PARK=${PARK:-../parked}
LIMIT=$((64 * 1024 * 1024))

size() {
  local bytes
  bytes=$( { git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null
             for c in "$@"; do find "$c" -type f -exec stat -c %s {} +; done; } | awk '{s += $1} END {print s + 0}')
  awk -v b="$bytes" -v l="$LIMIT" 'BEGIN {printf "%.1f MiB would travel (limit 64 MiB): %s\n", b / 1048576, b <= l ? "fits" : "TOO LARGE"}'
  [ "$bytes" -le "$LIMIT" ]
}

case "${1:-}" in
  size) shift; size "$@" ;;
  out)
    shift
    for p in "$@"; do
      [ -e "$p" ] || { echo "park: no $p here" >&2; exit 1; }
      mkdir -p "$PARK/$(dirname "$p")" && mv "$p" "$PARK/$p" && echo "parked $p"
    done ;;
  back)
    [ -d "$PARK" ] || { echo "park: nothing parked in $PARK"; exit 0; }
    (cd "$PARK" && find . -type f -print0) | while IFS= read -r -d '' f; do
      f=${f#./}; mkdir -p "$(dirname "$f")"; mv "$PARK/$f" "$f"; echo "back: $f"
    done
    find "$PARK" -depth -type d -empty -delete ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
