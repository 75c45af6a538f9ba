# GPU, issue 11 (autoencoder >= 32 dB and sharper; first run session 14): the 16-channel
# autoencoder continued whole (encoder and decoder) against a PatchGAN at two adversarial weights
# side by side on the one GPU, then both measured on held-out maps. INIT (default
# checkpoints/doom-gpu16-teacher, whose autoencoder session 14 made this way from ae16-wip) is
# any run or checkpoint with a 16-channel autoencoder. A new encoder changes the latents, so the
# teacher on them is then fine-tuned on the new ones (teacher16.sh with INIT=the old teacher).
# teacher16.sh, the next command on the same warm machine, picks the better of the two (PICK).
# One H200, about 9 minutes:
#   (1) the training and held-out data (record_data; ViZDoom carried)
#   (2) bench train --stage autoencoder in both memory layouts; the faster one trains
#   (3) two runs from INIT for AE_MIN minutes each, at adversarial weights WEIGHTS (adaptive),
#       their frames held on the GPU (--frames-on-device, auto on CUDA; session 14 ran before it,
#       at 2.2 steps/s each, loader-bound)
#   (4) eval autoencoder of INIT and of both runs (2,048 held-out frames), then PICK writes
#       $RUNS/ae16-picked (a link to the chosen run) and both runs come back as tars
# Options (session 15):
#   DECODER_ONLY=1  --decoder-only: the encoder and latent statistics of INIT stay, so its latents,
#                   latent cache and every transformer on them stay valid (GameNGen's recipe)
#   SKIP_BENCH=1    skip (2) (session 14 measured it: the default layout is the faster)
#   TEACHER_TOO=1   with DECODER_ONLY: teacher16.sh runs beside the two autoencoder runs on the
#                   same GPU, continuing INIT's teacher on INIT's (unchanged) latents
#                   (INIT=AE=$INIT; TEACHER_EVALS, default "turns next-block")
# Run from the repository root carrying .whl, with checkpoints/doom-gpu's generator and
# memory_model shards parked (park.sh; `park.sh size .whl`):
#   bash scripts/gpu/ae16.sh
source scripts/gpu/common.sh
set +e  # one failed step must not lose the rest
STOP_AT=${STOP_AT:-560}
INIT=${INIT:-checkpoints/doom-gpu16-teacher}
WEIGHTS=${WEIGHTS:-0.1 0.25}
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
NO_REVISIT=1 record_data 150000
ONLY=""; [ -n "${DECODER_ONLY:-}" ] && ONLY=--decoder-only
TEACHER_PID=""
if [ -n "${TEACHER_TOO:-}" ]; then
  [ -n "$ONLY" ] || { log "TEACHER_TOO needs DECODER_ONLY=1: a new encoder would change the teacher's latents"; exit 2; }
  log "teacher16.sh beside the autoencoder runs (log: $RUNS/teacher16-script.log)"
  STOP_AT=$(( STOP_AT - $(elapsed) )) AE=$INIT INIT=$INIT EVALS="${TEACHER_EVALS:-turns next-block}" \
      bash scripts/gpu/teacher16.sh > $RUNS/teacher16-script.log 2>&1 &
  TEACHER_PID=$!
  if [ -n "${DRY_RUN:-}" ]; then wait $TEACHER_PID || { cat $RUNS/teacher16-script.log; exit 2; }; fi
fi

if [ -z "${SKIP_BENCH:-}" ]; then
log "(2) bench train --stage autoencoder, both layouts"
T timeout 150 $MW bench train --stage autoencoder --preset doom-gpu --set autoencoder.latent_channels=16 \
    --batch-size 48 --adv-weight 0.25 --json $EVAL/bench-ae.json > $EVAL/bench-ae.txt 2>&1
tail -4 $EVAL/bench-ae.txt
LAYOUT=$($PY scripts/gpu/summary.py faster-layout $EVAL/bench-ae.json 2>/dev/null || echo default)
FLAG=""; [ "$LAYOUT" = "channels-last" ] && FLAG=--channels-last
log "training in the $LAYOUT layout"
else
FLAG=""
fi

AE_MIN=$(minutes_until $STOP_AT 75)  # evals and packing after
log "(3) $INIT continued at adversarial weights $WEIGHTS, $AE_MIN min each, side by side"
PIDS=""
for W in $WEIGHTS; do
  $MW train autoencoder --init $INIT --adv-weight $W --adv-start 0 $ONLY $FLAG --data "$DATA" --out $RUNS/ae16-$W \
      --batch-size 48 --lr 2e-4 --warmup-steps 100 --max-steps 1000000 --time-limit $AE_MIN \
      --checkpoint-every 2 --no-progress --log-every 100 > $RUNS/ae16-$W.log 2>&1 &
  PIDS="$PIDS $!"
done
wait $PIDS

log "(4) held-out reconstruction, 2,048 frames"
T $MW eval autoencoder --checkpoint $INIT --data "$DATA-heldout" --split heldout --max-frames 2048 \
    --json $EVAL/ae-init.json > $EVAL/ae-init.txt; head -2 $EVAL/ae-init.txt
RUNS_DONE=""
for W in $WEIGHTS; do
  tail -1 $RUNS/ae16-$W.log; tail -1 $RUNS/ae16-$W/metrics.csv
  T $MW eval autoencoder --checkpoint $RUNS/ae16-$W --data "$DATA-heldout" --split heldout --max-frames 2048 \
      --json $EVAL/ae-$W.json > $EVAL/ae-$W.txt; head -2 $EVAL/ae-$W.txt
  RUNS_DONE="$RUNS_DONE $RUNS/ae16-$W"
  bring_back ae16-$W $RUNS/ae16-$W
done
# the higher PSNR, unless the other is sharper and within 0.2 dB of it
PICKED=$($PY scripts/gpu/summary.py pick-autoencoder $(for W in $WEIGHTS; do echo $EVAL/ae-$W.json=$RUNS/ae16-$W; done))
[ -n "$PICKED" ] && [ -z "${DRY_RUN:-}" ] && ln -sfn "$PICKED" $RUNS/ae16-picked && log "picked $PICKED"
for f in $RUNS/ae16-*/metrics.csv; do cp "$f" $EVAL/metrics-$(basename $(dirname $f)).csv 2>/dev/null; done
[ -z "${DRY_RUN:-}" ] && tar cf $OUT/ae-evals.tar -C $EVAL .
for W in $WEIGHTS; do $PY scripts/gpu/summary.py autoencoder $EVAL/ae-$W.json; done
if [ -n "$TEACHER_PID" ]; then
  wait $TEACHER_PID; log "teacher16.sh:"; tail -25 $RUNS/teacher16-script.log
fi
log "done"; ls -la "$OUT"
