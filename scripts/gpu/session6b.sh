# GPU session 6b — one H200, about 9.5 minutes: the doom-gpu teacher on the new conditioning for
# ~5 minutes (INIT=dir continues from brought-back weights), beside it the decoder-only GAN
# fine-tune of the doom-cpu autoencoder (3 minutes; the teacher leaves most of the GPU idle) and
# then the tests marked gpu; then the teacher's action-following (eval turns) and next-block
# prediction on held-out maps (eval next-block, with copy-last and counterfactual actions).
# Carry .whl (bash scripts/gpu/make_wheels.sh); leave checkpoints other than doom-cpu behind.
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-548}
AE=checkpoints/doom-gpu
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
prepare_latents $AE
INIT_ARG=""; [ -n "${INIT:-}" ] && INIT_ARG="--init $INIT"
TRAIN_MIN=${TRAIN_MIN:-5.2}
log "teacher doom-gpu for $TRAIN_MIN min, in the background"
$MW train teacher --preset doom-gpu --data $DATA --autoencoder $AE --out $RUNS/teacher-gpu $INIT_ARG \
    --batch-size 32 --clip-blocks 4 --lr 3e-4 --warmup-steps 200 --ema-decay 0.998 --max-steps 1000000 \
    --time-limit $TRAIN_MIN --checkpoint-every 2 --log-every 100 --no-progress > $RUNS/teacher.log 2>&1 &
TEACHER_PID=$!
log "decoder-only GAN fine-tune of the autoencoder (3 min), beside it"
T $MW train autoencoder --init $AE --decoder-only --adv-weight 0.1 --adv-start 300 --data $DATA \
    --out $RUNS/ae-gan --batch-size 48 --lr 1e-4 --warmup-steps 100 --max-steps 100000 --time-limit 3 \
    --no-progress --log-every 50 > $RUNS/ae-gan.log 2>&1
tail -2 $RUNS/ae-gan.log; tail -1 $RUNS/ae-gan/metrics.csv
log "tests marked gpu, beside the teacher"
(STOP_AT=400; SKIP_WHEELS=1 T bash scripts/gpu/test.sh > $RUNS/gpu-tests.txt 2>&1); tail -4 $RUNS/gpu-tests.txt
wait $TEACHER_PID
tail -2 $RUNS/teacher.log; tail -2 $RUNS/teacher-gpu/metrics.csv
bring_back teacher-gpu $RUNS/teacher-gpu
bring_back ae-gan $RUNS/ae-gan
log "teacher: turns and next block on held-out maps"
T $MW eval turns --teacher $RUNS/teacher-gpu --autoencoder $AE --teacher-steps 20 --cases 16 --out $EVAL/turns \
    --json $EVAL/turns.json 2>&1 | tail -12
cp $EVAL/turns/turns_strip.png $OUT/ 2>/dev/null
T $MW eval next-block --teacher $RUNS/teacher-gpu --autoencoder $AE --teacher-steps 20 --data $DATA-heldout \
    --cases 64 --json $EVAL/next-block.json 2>&1 | tail -14
T $MW eval autoencoder --checkpoint $RUNS/ae-gan --data $DATA-heldout --split heldout --max-frames 2048 \
    --json $EVAL/ae-gan.json 2>&1 | tail -4
tar cf $OUT/evals.tar -C $EVAL turns.json next-block.json ae-gan.json
log "done"; ls -la "$OUT"
