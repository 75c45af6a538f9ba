# GPU session 5b — NOT RUN YET (no device time left when it was written). One H100/H200, ~9 min:
#   MAG memory models for block sizes B = 1, 3, 4, 5 with the same training time (the paper's
#   Table 4), each scored by `eval memory`; the MemoryPack baseline trained for MAG's stage-1 +
#   stage-2 time; the revisit table on 64 cases with its row.
# Carry .whl and runs/s3/ode; leave checkpoints/doom-small behind.  bash scripts/gpu/session5b.sh
source scripts/gpu/common.sh
set +e  # one failed step must not lose the rest: each long step is bounded by T
ODE=${ODE:-runs/s3/ode}  # session 3's ode-init generator (git-ignored: carry it)
[ -n "${DRY_RUN:-}" ] || [ -f "$ODE/checkpoint/config.json" ] || { echo "missing $ODE: carry it (see the header)"; exit 2; }
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
record_data 150000
COMMON="--preset doom-cpu --data $DATA --autoencoder checkpoints/doom-cpu --no-progress --log-every 25 --max-steps 100000"

for B in 1 3 4 5; do
  log "memory model, B = $B"
  T $MW train memory $COMMON --init $ODE --out $RUNS/mem-b$B --set model.block_frames=$B --batch-size 16 \
      --warmup-steps 20 --time-limit 1.0 2>&1 | grep -E "stopped|Error"
  # the memory run is packaged as its own generator so the checkpoint's block size is B
  $MW train package --autoencoder checkpoints/doom-cpu --generator $RUNS/mem-b$B --generator-name memory_model \
      --memory-model $RUNS/mem-b$B --out /tmp/ship-mem-b$B > /dev/null
  T $MW eval memory --checkpoint /tmp/ship-mem-b$B --data "$DATA-heldout" --cases 64 --blocks $(( 12 / B )) \
      --json $EVAL/memory-b$B.json > /dev/null
  python3 scripts/gpu/summary.py memory $EVAL/memory-b$B.json
done
bring_back s5b-mem $RUNS/mem-b1 $RUNS/mem-b3 $RUNS/mem-b4 $RUNS/mem-b5

log "MemoryPack, 3.4 min from ode-init (MAG: 1.2 min stage 1 + 2.2 min stage 2)"
T $MW train memorypack $COMMON --init $ODE --out $RUNS/mp --batch-size 16 --warmup-steps 20 \
    --time-limit 3.4 2>&1 | grep -E "stopped|Error"
bring_back s5b-memorypack $RUNS/mp
$MW train package --autoencoder checkpoints/doom-cpu --generator $RUNS/mp --out /tmp/ship-mp > /dev/null
log "revisit, 64 cases, every strategy and MemoryPack"
T $MW eval revisit --checkpoint checkpoints/doom-cpu --bench "$DATA-revisit" --cases 64 --memorypack /tmp/ship-mp \
    --plot $EVAL/revisit_since_seen.png --json $EVAL/revisit64.json
tar cf $OUT/s5b-evals.tar -C $EVAL .
log "done"; ls -la "$OUT"
