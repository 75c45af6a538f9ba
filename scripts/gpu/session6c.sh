# GPU session 6c — one H200, about 7 minutes: continue the doom-gpu teacher from session 6b's
# weights (carried as runs/teacher-gpu-s6b; weights only, a fresh optimizer) for TRAIN_MIN
# minutes at a lower learning rate, bring it back, and run the turn test on 8 held-out cases.
# Next-block prediction is measured afterwards on the CPU (the same command, --device cpu).
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-440}
AE=checkpoints/doom-gpu
INIT=${INIT:-runs/teacher-gpu-s6b}
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
prepare_latents $AE
log "teacher doom-gpu, continued from $INIT"
T $MW train teacher --preset doom-gpu --data $DATA --autoencoder $AE --out $RUNS/teacher-gpu --init $INIT \
    --batch-size 32 --clip-blocks 4 --lr 2e-4 --warmup-steps 100 --ema-decay 0.998 --max-steps 1000000 \
    --time-limit ${TRAIN_MIN:-4.8} --checkpoint-every 2 --log-every 100 --no-progress 2>&1 | tail -2
tail -2 $RUNS/teacher-gpu/metrics.csv
bring_back teacher-gpu $RUNS/teacher-gpu
T $MW eval turns --teacher $RUNS/teacher-gpu --autoencoder $AE --teacher-steps 20 --cases 8 --out $EVAL/turns \
    --json $OUT/turns.json > /dev/null 2>&1
python3 scripts/gpu/summary.py turns $OUT/turns.json
log "done"; ls -la "$OUT"
