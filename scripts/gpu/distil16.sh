# GPU, issue 11 (first written session 14, not yet run): the 4-step generator of the 16-channel
# chain, distilled from its teacher, then the MAG memory model from that generator, packaged with
# the teacher's autoencoder as a playable bundle ($RUNS/ship-doom-gpu), then its turn test (8
# held-out cases) and next-block prediction (32 held-out cases, true / mirrored / shuffled
# actions, copy-last), so it can be set against checkpoints/doom-gpu. One H200, about 9.5 minutes.
#   TEACHER: default checkpoints/doom-gpu16-teacher (teacher and autoencoder in one folder); on a
#            machine still warm from teacher16.sh, TEACHER=/tmp/runs/teacher16 AE=/tmp/runs/ae16-picked
# Brings back generator + memory model as gen-mem-gpu*.tar, and the evaluations as evals.tar.
# Run from the repository root carrying .whl (ViZDoom records the data; the eval needs the engine),
# with checkpoints/doom-gpu's generator and memory_model shards parked (park.sh):
#   bash scripts/gpu/distil16.sh
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-545}
TEACHER=${TEACHER:-checkpoints/doom-gpu16-teacher}
AE=${AE:-$TEACHER}
need_checkpoint "$TEACHER"
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
prepare_latents "$AE"
COMMON="--preset doom-gpu --set autoencoder.latent_channels=16 --set model.latent_channels=16 --data $DATA \
--autoencoder $AE --max-steps 1000000 --no-progress --log-every 100"

log "ode-init from $TEACHER (${ODE_MIN:=5.0} min)"
T $MW train ode-init $COMMON --teacher $TEACHER --out $RUNS/ode-gpu --set sampler.teacher_steps=12 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --time-limit $ODE_MIN 2>&1 | tail -1
tail -1 $RUNS/ode-gpu/metrics.csv
MEM_MIN=${MEM_MIN:-1.5} memory_and_package $RUNS/ode-gpu
bundle_evals $RUNS/ship-doom-gpu
[ -z "${DRY_RUN:-}" ] && tar cf $OUT/evals.tar -C $EVAL .
$PY scripts/gpu/summary.py turns $EVAL/turns.json
$PY scripts/gpu/summary.py next-block $EVAL/next-block.json
log "done"; ls -la "$OUT"
