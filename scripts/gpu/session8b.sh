# GPU session 8b — one H200, about 9.5 minutes: the 4-step generator distilled ALONE on the GPU
# (session 7b's had 89 ode-init steps, sharing the GPU with two other runs) from
# checkpoints/doom-gpu-teacher (15,665 steps after session 8a), then the MAG memory model
# (stage 1) from that generator, packaged with the doom-gpu autoencoder as the doom-gpu bundle;
# then the tests marked gpu, the bundle's turn test (8 held-out cases) and next-block prediction
# (32 held-out cases, true / mirrored / shuffled actions, copy-last).
# Brings back generator + memory model as gen-mem-gpu.tar.part*, and the evaluations.
# Run from the repository root, carrying .whl:  bash scripts/gpu/session8b.sh
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-545}
AE=checkpoints/doom-gpu
TEACHER=${TEACHER:-checkpoints/doom-gpu-teacher}
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
prepare_latents $AE
COMMON="--preset doom-gpu --data $DATA --autoencoder $AE --max-steps 1000000 --no-progress --log-every 100"

log "ode-init from $TEACHER, alone (${ODE_MIN:=4.0} min)"
T $MW train ode-init $COMMON --teacher $TEACHER --out $RUNS/ode-gpu --set sampler.teacher_steps=12 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --time-limit $ODE_MIN 2>&1 | tail -1
tail -1 $RUNS/ode-gpu/metrics.csv
MEM_MIN=${MEM_MIN:-1.4} memory_and_package $RUNS/ode-gpu
gpu_tests
bundle_evals $RUNS/ship-doom-gpu
[ -z "${DRY_RUN:-}" ] && tar cf $OUT/evals.tar -C $EVAL .
$PY scripts/gpu/summary.py turns $EVAL/turns.json
$PY scripts/gpu/summary.py next-block $EVAL/next-block.json
log "done"; ls -la "$OUT"
