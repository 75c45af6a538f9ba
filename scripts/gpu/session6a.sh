# GPU session 6a — one H200, about 9.5 minutes: the new trainer's speed, then the doom-gpu teacher
# from scratch on the new conditioning (action path to the tokens, latent cache, compiled).
#   1. record the training and held-out data on the machine (16 cores), encode it once (latent cache)
#   2. bench train at the shape (dim 512 x 12 layers, 50 tokens/frame, batch 32 x 12 frames)
#      beside the plain reference transformer
#   3. train the doom-gpu teacher until STOP_AT, checkpointing every 2 minutes; bring back its
#      weights (bf16), metrics and the bench JSON
# Carry .whl (bash scripts/gpu/make_wheels.sh); leave checkpoints other than doom-cpu behind
# (64 MiB limit).  INIT=dir continues from a brought-back teacher (weights only).
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-545}
AE=checkpoints/doom-gpu
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
prepare_latents $AE
log "bench train at the issue's shape, with the reference"
T $MW bench train --stage teacher --preset doom-gpu --set model.dim=512 model.heads=8 model.layers=12 \
    model.ffn_dim=2048 --batch-size 32 --clip-blocks 4 --steps 40 --warmup 8 --json $OUT/bench-train-512x12.json
log "teacher doom-gpu"
INIT_ARG=""; [ -n "${INIT:-}" ] && INIT_ARG="--init $INIT"
LEFT=$(minutes_until $STOP_AT 25)
T $MW train teacher --preset doom-gpu --data $DATA --autoencoder $AE --out $RUNS/teacher-gpu $INIT_ARG \
    --batch-size 32 --clip-blocks 4 --lr 3e-4 --warmup-steps 200 --ema-decay 0.998 --max-steps 1000000 \
    --time-limit $LEFT --checkpoint-every 2 --log-every 100 --no-progress 2>&1 | grep -vE "^\s*$" | tail -5
tail -3 $RUNS/teacher-gpu/metrics.csv
bring_back teacher-gpu $RUNS/teacher-gpu
log "done"; ls -la "$OUT"
