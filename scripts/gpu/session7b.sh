# GPU session 7b — one H200, about 9 minutes (7a's teacher and ode-init stopped after one step:
# the trainer reserved two compile-length steps under the time limit; fixed in trainer.py).
# Three runs side by side on the one GPU (each small model leaves most of it idle):
#   (A) the 4-step generator (ode-init, the teacher's 12-step ODE solutions) from the shipped
#       doom-gpu teacher, then the memory model (MAG stage 1) from it, packaged as
#       runs/ship-doom-gpu (with the doom-cpu autoencoder): the first playable doom-gpu bundle;
#       then the turn test of that bundle on 8 held-out cases
#   (B) the teacher continued from checkpoints/doom-gpu-teacher at batch 64, for the next session
#   (C) the 16-channel autoencoder continued from 7a's weights (AE16_INIT), adversarial from the start
# Run from the repository root, carrying .whl and runs/s7a/ae16:  bash scripts/gpu/session7b.sh
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-540}
AE=checkpoints/doom-gpu
TEACHER=${TEACHER:-checkpoints/doom-gpu-teacher}
AE16_INIT=${AE16_INIT:-runs/s7a/ae16}
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
prepare_latents $AE
COMMON="--preset doom-gpu --data $DATA --autoencoder $AE --max-steps 1000000 --no-progress --log-every 100"

log "(B) teacher continued, batch 64, in the background (${TEACHER_MIN:=6.4} min)"
$MW train teacher $COMMON --init $TEACHER --out $RUNS/teacher-gpu --batch-size 64 --clip-blocks 4 \
    --lr 2e-4 --warmup-steps 100 --ema-decay 0.998 --time-limit $TEACHER_MIN --checkpoint-every 2 \
    > $RUNS/teacher.log 2>&1 &
TEACHER_PID=$!
log "(C) 16-channel autoencoder continued, in the background (${AE_MIN:=6.4} min)"
$MW train autoencoder --init $AE16_INIT --data $DATA --out $RUNS/ae16 --batch-size 48 --lr 2e-4 \
    --warmup-steps 100 --adv-weight 0.1 --adv-start 0 --max-steps 1000000 --time-limit $AE_MIN \
    --checkpoint-every 2 --no-progress --log-every 100 > $RUNS/ae16.log 2>&1 &
AE_PID=$!

log "(A) ode-init from $TEACHER (${ODE_MIN:=3.3} min)"
T $MW train ode-init $COMMON --teacher $TEACHER --out $RUNS/ode-gpu --set sampler.teacher_steps=12 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --time-limit $ODE_MIN 2>&1 | tail -1
tail -1 $RUNS/ode-gpu/metrics.csv
log "(A) memory model from the generator (${MEM_MIN:=1.6} min)"
T $MW train memory $COMMON --init $RUNS/ode-gpu --out $RUNS/mem-gpu --batch-size 32 --lr 1e-4 \
    --warmup-steps 50 --time-limit $MEM_MIN 2>&1 | tail -1
tail -1 $RUNS/mem-gpu/metrics.csv
$MW train package --autoencoder $AE --generator $RUNS/ode-gpu --memory-model $RUNS/mem-gpu \
    --out $RUNS/ship-doom-gpu --dtype bfloat16 2>&1 | tail -1
bring_back gen-mem-gpu $RUNS/ode-gpu $RUNS/mem-gpu

wait $TEACHER_PID $AE_PID
tail -1 $RUNS/teacher.log; tail -1 $RUNS/teacher-gpu/metrics.csv
tail -1 $RUNS/ae16.log; tail -1 $RUNS/ae16/metrics.csv
bring_back teacher-gpu $RUNS/teacher-gpu
bring_back ae16 $RUNS/ae16
log "(A) turn test of the bundle, 8 held-out cases"
T $MW eval turns --checkpoint $RUNS/ship-doom-gpu --cases 8 --out $EVAL/turns --json $OUT/turns.json > /dev/null 2>&1
$PY scripts/gpu/summary.py turns $OUT/turns.json
log "done"; ls -la "$OUT"
