# GPU, issue 11: do finer tokens give the teacher sharper, more detailed frames? (Session 10 found, by
# the implied turn of `eval turns`, that the teachers already slide the view by ~91% of the angle.) One H200, about
# 9.5 minutes. Three doom-gpu teachers from scratch, side by side on the one GPU, the same number
# of steps each (the GPU is shared, so compare them at equal steps, not equal minutes):
#   patch 1x3x2: 5x10 = 50 tokens a frame (the shipped shape; a token covers 24x16 pixels)
#   patch 1x5x1: 3x20 = 60 tokens, each 40x8 pixels: fine across, where a turn moves the view
#   patch 1x3x1: 5x20 = 100 tokens, each 24x8 pixels
# (a turn of 11.25 degrees a frame moves the centre of the view about 16 pixels: 80 tan 11.25), on the latents of the
# 16-channel autoencoder checkpoints/ae16-wip (31.74 dB, sharpness 0.177x against the shipped
# 30.68 dB, 0.049x; session 8, CPU), so that the winner can go on as the next teacher; AE= and
# AE_SET= pick another (AE=checkpoints/doom-gpu AE_SET= for the shipped 8 channels). Then the turn test of each
# (8 held-out cases, 20 Euler steps); the per-frame PSNR in turns.json shows how well the first
# turned frames, where the engine only slides the view, are predicted.
# Run from the repository root, carrying .whl:  bash scripts/gpu/patch_ablation.sh
# The tree and .whl must fit in the 64 MiB that travels: move checkpoints/doom-gpu's generator
# and memory_model shards and checkpoints/doom-gpu-teacher out of the tree for the command.
# STEPS (default 3000) steps each; STOP_AT bounds the whole command (set it under the device
# time left: `status` tells).
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-545}
AE=${AE:-checkpoints/doom-gpu16-teacher}
AE_SET=${AE_SET---set autoencoder.latent_channels=16 --set model.latent_channels=16}
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
prepare_latents $AE
COMMON="--preset doom-gpu $AE_SET --data $DATA --autoencoder $AE --no-progress --log-every 100"
PATCHES="1,3,2 1,5,1 1,3,1"
TRAIN_MIN=$(minutes_until $STOP_AT 120)  # leave two minutes for the turn tests and packing

log "three teachers from scratch, ${STEPS:=3000} steps each, at most $TRAIN_MIN min"
PIDS=""
for P in $PATCHES; do
  N=p${P//,/}
  $MW train teacher $COMMON --set "model.patch=[$P]" --out $RUNS/teacher-$N --max-steps $STEPS \
      --batch-size 32 --clip-blocks 4 --lr 3e-4 --warmup-steps 100 --ema-decay 0.998 --time-limit $TRAIN_MIN \
      --checkpoint-every 3 > $RUNS/teacher-$N.log 2>&1 &
  PIDS="$PIDS $!"
done
wait $PIDS
for P in $PATCHES; do
  N=p${P//,/}
  echo "teacher $N: $(tail -1 $RUNS/teacher-$N.log)"; tail -1 $RUNS/teacher-$N/metrics.csv
done

log "turn tests, 8 held-out cases each, side by side"
PIDS=""
for P in $PATCHES; do
  N=p${P//,/}
  T $MW eval turns --teacher $RUNS/teacher-$N --autoencoder $AE --teacher-steps 20 --cases 8 \
      --out $EVAL/turns-$N --json $EVAL/turns-$N.json > $EVAL/turns-$N.txt 2>&1 &
  PIDS="$PIDS $!"
done
wait $PIDS
[ -z "${DRY_RUN:-}" ] && { for P in $PATCHES; do N=p${P//,/}; cp $RUNS/teacher-$N/metrics.csv $EVAL/metrics-$N.csv; done
  tar cf $OUT/evals.tar -C $EVAL .; }
for P in $PATCHES; do $PY scripts/gpu/summary.py turns $EVAL/turns-p${P//,/}.json; done
log "done"; ls -la "$OUT"
