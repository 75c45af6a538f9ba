# GPU session 7a — one H200, about 9.5 minutes: the first playable doom-gpu bundle, and a
# 16-channel autoencoder beside it for the next teacher.
#   (1) the doom-gpu teacher continued from checkpoints/doom-gpu-teacher at batch 64 (the model
#       leaves most of the H200 idle at batch 32, so a larger batch costs little per step)
#   (2) ode-init: the 4-step generator regressed onto the teacher's 12-step ODE solutions
#   (3) MAG stage 1: the memory model, initialised from the generator
#   (4) packaged as runs/ship-doom-gpu (generator + memory model + the doom-cpu autoencoder)
#   beside (1)-(3): an autoencoder with 16 latent channels (8 today) trained from scratch with the
#   adversarial decoder loss from step ADV_START, to lift the 30.4 dB / 0.05x-sharpness ceiling.
# Everything comes back in <= 15 MiB tar parts; evaluation runs afterwards on the CPU.
# Run from the repository root, carrying .whl:  bash scripts/gpu/session7a.sh
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-535}
AE=checkpoints/doom-gpu
TEACHER_INIT=${TEACHER_INIT:-checkpoints/doom-gpu-teacher}
prepare_latents $AE
COMMON="--preset doom-gpu --data $DATA --autoencoder $AE --max-steps 1000000 --no-progress --log-every 100"

log "autoencoder, 16 latent channels, from scratch, in the background (${AE_MIN:=6.6} min)"
$MW train autoencoder --preset doom-gpu --set autoencoder.latent_channels=16 --data $DATA --out $RUNS/ae16 \
    --batch-size 48 --lr 4e-4 --warmup-steps 200 --adv-weight 0.1 --adv-start ${ADV_START:-2500} \
    --max-steps 1000000 --time-limit $AE_MIN --checkpoint-every 2 --no-progress --log-every 100 \
    > $RUNS/ae16.log 2>&1 &
AE_PID=$!

log "(1) teacher, continued, batch 64 (${TEACHER_MIN:=3.6} min)"
T $MW train teacher $COMMON --init $TEACHER_INIT --out $RUNS/teacher-gpu --batch-size 64 --clip-blocks 4 \
    --lr 2e-4 --warmup-steps 100 --ema-decay 0.998 --time-limit $TEACHER_MIN --checkpoint-every 2 2>&1 | tail -1
tail -1 $RUNS/teacher-gpu/metrics.csv
bring_back teacher-gpu $RUNS/teacher-gpu

log "(2) ode-init from the teacher (${ODE_MIN:=1.9} min)"
T $MW train ode-init $COMMON --teacher $RUNS/teacher-gpu --out $RUNS/ode-gpu --set sampler.teacher_steps=12 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --time-limit $ODE_MIN 2>&1 | tail -1
tail -1 $RUNS/ode-gpu/metrics.csv

log "(3) memory model from the generator (${MEM_MIN:=1.3} min)"
T $MW train memory $COMMON --init $RUNS/ode-gpu --out $RUNS/mem-gpu --batch-size 32 --lr 1e-4 \
    --warmup-steps 50 --time-limit $MEM_MIN 2>&1 | tail -1
tail -1 $RUNS/mem-gpu/metrics.csv

log "(4) package"
$MW train package --autoencoder $AE --generator $RUNS/ode-gpu --memory-model $RUNS/mem-gpu \
    --out $RUNS/ship-doom-gpu --dtype bfloat16 2>&1 | tail -1
bring_back gen-mem-gpu $RUNS/ode-gpu $RUNS/mem-gpu

wait $AE_PID
tail -1 $RUNS/ae16.log; tail -1 $RUNS/ae16/metrics.csv
bring_back ae16 $RUNS/ae16
log "done"; ls -la "$OUT"
