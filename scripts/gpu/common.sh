# Sourced by the GPU session scripts: installs the carried wheels and sets up paths.
# Usage on the device machine (repo root):  bash scripts/gpu/<session>.sh
# DRY_RUN=1 bash scripts/gpu/<session>.sh checks every magworld command line of a script against
# the CLI without running it (tests/test_gpu_scripts.py does, so no GPU minute is lost to a typo).
set -euo pipefail
export PYTHONUNBUFFERED=1
if [ -n "${DRY_RUN:-}" ]; then
  export PYTHONPATH=$PWD
elif [ -d "${WHEELS:=.whl}" ] && [ -z "${SKIP_WHEELS:-}" ]; then
  # WHEELS: the carried folder (default .whl; speed.sh needs only pyzmq, and the tracked tree
  # with all three checkpoints leaves no room for ViZDoom under the 64 MiB that travels).
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  # ViZDoom travels as its wheel's files, xz-compressed without the example scenarios (22 MB
  # instead of the 39 MB wheel), so that it fits beside the shipped checkpoints.
  for t in "$WHEELS"/*-site.tar.xz; do [ -f "$t" ] && tar xJf "$t" -C /tmp/site; done
  export PYTHONPATH=/tmp/site:$PWD
elif [ -z "${SKIP_WHEELS:-}" ] && [ -d /tmp/site ]; then
  # nothing carried, but a machine still warm from a command that carried them (prepare.sh)
  # keeps what it installed
  echo "using the wheels a previous command installed in /tmp/site"
  export PYTHONPATH=/tmp/site:$PWD
else
  # keeps a caller's path (speed.sh runs test.sh with SKIP_WHEELS=1 after unpacking them itself)
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
OUT=${OUT:-/tmp/out}
RUNS=${RUNS:-/tmp/runs}
DATA=${DATA:-/tmp/data}
mkdir -p "$OUT" "$RUNS"
PY=${PYTHON:-python3}
MW="$PY -m worldmodel.cli"
if [ -n "${DRY_RUN:-}" ]; then
  # record every magworld command line (dry_mw.sh) and parse them all in one process at the end
  DRY_CMDS=$(mktemp); export DRY_CMDS
  MW="bash scripts/gpu/dry_mw.sh"
  trap '$PY scripts/gpu/check_args.py --commands "$DRY_CMDS" || exit 2' EXIT
fi
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
# minutes left before a deadline given in seconds since the start, minus a margin
minutes_until() { python3 -c "print(max(0.5, ($1 - $(elapsed) - ${2:-0}) / 60))"; }
log() { echo "[$(elapsed)s] $*"; }
[ -z "${DRY_RUN:-}" ] && { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; }

record_data() {
  # The same seed every session: the data set is regenerated identically on each fresh machine.
  log "recording training data"
  $MW data record --policy mix --frames "${1:-150000}" --workers ${WORKERS:-15} --seed 1 --out "$DATA" 2>&1 | tail -3
  $MW data check "$DATA" | tail -2 && { [ -n "${DRY_RUN:-}" ] || touch "$DATA/.recorded"; }
  log "recording held-out data and the revisit benchmark"
  $MW data record --policy mix --frames 6000 --workers 4 --seed 2 --out "$DATA-heldout" \
      --maps freedoom1.wad:E2M3 freedoom1.wad:E4M5 freedoom2.wad:MAP07 freedoom2.wad:MAP19 2>&1 | tail -2
  if [ -z "${NO_REVISIT:-}" ]; then
    $MW data revisit-bench --cases ${CASES:-64} --seed 0 --out "$DATA-revisit" 2>&1 | tail -2
  fi
}

prepare_latents() {
  # prepare_latents AE: the training and held-out data (record_data), then the training frames
  # encoded once by autoencoder AE into the dataset's latent cache. A machine still warm from the
  # previous command keeps /tmp: data made there for the same AE is reused (saves about 70 s).
  # FRAMES (default 150,000) training frames are recorded where none are kept; for a larger set on
  # a warm machine name a new DATA too (DATA=/tmp/data500k FRAMES=500000: 29 GB of frames on disk).
  local mark="$DATA/.prepared-$(echo "$1" | tr / _)"
  if [ -z "${DRY_RUN:-}" ] && [ -f "$mark" ] && [ -d "$DATA-heldout" ]; then
    log "data and latent cache for $1 kept from the previous command on this machine"
    return 0
  fi
  if [ -z "${DRY_RUN:-}" ] && [ -f "$DATA/.recorded" ] && [ -d "$DATA-heldout" ]; then
    log "data kept from the previous command on this machine; encoding it for $1"
  else
    if [ -z "${DRY_RUN:-}" ] && ! $PY -c "import vizdoom" 2>/dev/null; then
      log "no data kept from a previous command on this machine, and no ViZDoom to record it: run"
      log "scripts/gpu/prepare.sh first (carrying .whl), then this command while the machine is warm"
      exit 3
    fi
    NO_REVISIT=1 record_data ${FRAMES:-150000}
  fi
  log "latent cache"
  $MW data encode --data "$DATA" --autoencoder "$1" && { [ -n "${DRY_RUN:-}" ] || touch "$mark"; }
}

bring_back() {
  # bring_back NAME RUN_DIR...: EMA weights (bf16), config and metrics of each run, as one tar in $OUT
  local name=$1; shift
  [ -n "${DRY_RUN:-}" ] && { log "dry run: would bring back $name"; return 0; }
  $PY scripts/gpu/collect.py "$OUT/$name.tar" "$@"
}

# T CMD...: run CMD but stop it at ${STOP_AT:-520} s after the start, so that what was made still
# gets packed into $OUT before the device command's 600 s limit.
T() {
  local left=$(( ${STOP_AT:-520} - $(elapsed) ))
  if [ $left -lt 5 ]; then log "skipped (out of time): $*"; return 0; fi
  timeout $left "$@" || log "stopped or failed ($?): $*"
}

# memory_and_package GEN_RUN: MAG stage 1 (the memory model, ${MEM_MIN} minutes) from the generator
# of run GEN_RUN, both packaged with $AE as $RUNS/ship-doom-gpu and brought back (gen-mem-gpu).
memory_and_package() {
  log "memory model (MAG stage 1) from $1 (${MEM_MIN} min)"
  T $MW train memory $COMMON --init "$1" --out $RUNS/mem-gpu --batch-size 32 --lr 1e-4 \
      --warmup-steps 50 --time-limit $MEM_MIN 2>&1 | tail -1
  tail -1 $RUNS/mem-gpu/metrics.csv
  T $MW train package --autoencoder $AE --generator "$1" --memory-model $RUNS/mem-gpu \
      --out $RUNS/ship-doom-gpu --dtype bfloat16 2>&1 | tail -1
  bring_back gen-mem-gpu "$1" $RUNS/mem-gpu
}

# gpu_tests: the tests marked gpu (scripts/gpu/test.sh) with the wheels already unpacked, log in $EVAL
gpu_tests() {
  log "tests marked gpu"
  T env SKIP_WHEELS=1 bash scripts/gpu/test.sh > $EVAL/gpu-tests.txt 2>&1
  tail -3 $EVAL/gpu-tests.txt
}

# bundle_evals CKPT: turn test (8 held-out cases) and next-block prediction (32 held-out cases,
# true / mirrored / shuffled actions, copy-last) of bundle CKPT, JSON in $EVAL
bundle_evals() {
  log "turn test of $1, 8 held-out cases"
  T $MW eval turns --checkpoint "$1" --cases 8 --out $EVAL/turns --json $EVAL/turns.json > $EVAL/turns.txt 2>&1
  log "next-block of $1, 32 held-out cases"
  T $MW eval next-block --checkpoint "$1" --data $DATA-heldout --cases 32 \
      --json $EVAL/next-block.json > $EVAL/next-block.txt 2>&1
}

# need_checkpoint DIR: stop before any GPU minute is spent when DIR is not in the tree. The
# 8-channel teacher checkpoints/doom-gpu-teacher left the tree in session 14 (the 60 MB budget
# holds the 16-channel one instead); the scripts of the 8-channel chain name it by default.
need_checkpoint() {
  [ -n "${DRY_RUN:-}" ] || [ -e "$1" ] && return 0
  log "$1 is not in the tree; the 8-channel teacher comes back with: git checkout f3a61cf -- checkpoints/doom-gpu-teacher"
  exit 4
}
