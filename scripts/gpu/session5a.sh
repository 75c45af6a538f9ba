# GPU session 5a — NOT RUN YET (the project's device time ran out before it; written to be run
# as soon as there is some). One H100/H200, about 9 minutes:
#   speed: the generator loop and the server, eager PyTorch against the cudagraph backend, and
#          four clients batched; then Direct Forcing against Self Forcing/DMD from the same
#          ode-init generator with the same training time, scored by next-block prediction.
# Run from the repository root with .whl (pyzmq wheel + vizdoom-*-site.tar.xz) and runs/s3/ode
# carried, checkpoints/doom-small left behind (64 MiB limit):  bash scripts/gpu/session5a.sh
source scripts/gpu/common.sh
set +e  # one failed step must not lose the rest: each long step is bounded by T
ODE=${ODE:-runs/s3/ode}  # session 3's ode-init generator (git-ignored: carry it)
[ -n "${DRY_RUN:-}" ] || [ -f "$ODE/checkpoint/config.json" ] || { echo "missing $ODE: carry it (see the header)"; exit 2; }
TEACHER=checkpoints/doom-cpu-teacher
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
NO_REVISIT=1 record_data 150000

log "bench generate: eager and CUDA graphs"
for P in doom-cpu doom-small; do
  for G in "" --cuda-graphs; do
    T $MW bench generate --preset $P --blocks 200 $G --json $EVAL/gen-$P${G:+-graphs}.json | grep -E "frames_per|p50|p99"
  done
done
log "bench serve, shipped doom-cpu: eager, CUDA graphs, four clients batched"
for B in torch cudagraph; do
  T $MW bench serve --checkpoint checkpoints/doom-cpu --device cuda --backend $B --blocks 600 --window 100 \
      --json $EVAL/serve-doom-cpu-$B.json 2>&1 | tail -15
done
T $MW bench serve --checkpoint checkpoints/doom-cpu --device cuda --backend torch --clients 4 --blocks 300 --window 50 \
    --json $EVAL/serve-doom-cpu-torch-4clients.json 2>&1 | tail -15

COMMON="--preset doom-cpu --data $DATA --autoencoder checkpoints/doom-cpu --no-progress --log-every 25 --max-steps 100000"
log "Direct Forcing, 1.5 min from ode-init"
T $MW train direct-forcing $COMMON --init $ODE --out $RUNS/df --batch-size 16 --lr 5e-5 --warmup-steps 10 \
    --time-limit 1.5 2>&1 | grep -E "stopped|Error"
log "Self Forcing + DMD, 1.5 min from ode-init"
T $MW train dmd $COMMON --init $ODE --teacher $TEACHER --out $RUNS/dmd --batch-size 8 --lr 5e-5 --critic-steps 2 \
    --warmup-steps 10 --time-limit 1.5 2>&1 | grep -E "stopped|Error"
bring_back s5a-df-dmd $RUNS/df $RUNS/dmd
for r in ode df dmd; do
  run=$RUNS/$r; [ $r = ode ] && run=$ODE
  $MW train package --autoencoder checkpoints/doom-cpu --generator $run --out /tmp/ship-$r > /dev/null
  T $MW eval next-block --checkpoint /tmp/ship-$r --data "$DATA-heldout" --cases 64 --strategy full \
      --json $EVAL/next-block-$r.json > /dev/null
  python3 scripts/gpu/summary.py next-block $EVAL/next-block-$r.json
done
tar cf $OUT/s5a-evals.tar -C $EVAL .
log "done"; ls -la "$OUT"
