# GPU session 8a — one H200, about 9.5 minutes: the doom-gpu teacher continued ALONE on the GPU
# (session 7b's three side-by-side runs slowed each other), batch 64 clips of 12 frames, from
# checkpoints/doom-gpu-teacher (10,698 steps); then its turn test (8 held-out cases) and next-block
# prediction (64 held-out cases, true / mirrored / shuffled actions, copy-last), 20 Euler steps.
# Brings back the teacher (EMA, bf16) as teacher-gpu.tar.part*, and the evaluations' JSON.
# Run from the repository root, carrying .whl:  bash scripts/gpu/session8a.sh
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-550}
AE=checkpoints/doom-gpu
TEACHER=${TEACHER:-checkpoints/doom-gpu-teacher}
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
prepare_latents $AE
COMMON="--preset doom-gpu --data $DATA --autoencoder $AE --max-steps 1000000 --no-progress --log-every 100"

log "teacher continued alone, batch 64 (${TEACHER_MIN:=6.2} min)"
T $MW train teacher $COMMON --init $TEACHER --out $RUNS/teacher-gpu --batch-size 64 --clip-blocks 4 \
    --lr 2e-4 --warmup-steps 100 --ema-decay 0.998 --time-limit $TEACHER_MIN --checkpoint-every 2 2>&1 | tail -2
tail -1 $RUNS/teacher-gpu/metrics.csv
bring_back teacher-gpu $RUNS/teacher-gpu

log "turn test, 8 held-out cases"
T $MW eval turns --teacher $RUNS/teacher-gpu --autoencoder $AE --teacher-steps 20 --cases 8 --out $EVAL/turns \
    --json $EVAL/turns.json > $EVAL/turns.txt 2>&1
log "next-block, 64 held-out cases"
T $MW eval next-block --teacher $RUNS/teacher-gpu --autoencoder $AE --teacher-steps 20 --data $DATA-heldout \
    --cases 64 --json $EVAL/next-block.json > $EVAL/next-block.txt 2>&1
[ -z "${DRY_RUN:-}" ] && tar cf $OUT/evals.tar -C $EVAL .
tail -25 $EVAL/turns.txt; tail -25 $EVAL/next-block.txt
log "done"; ls -la "$OUT"
