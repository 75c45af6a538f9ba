# GPU session (autoencoder sharpness; first run session 11). One H100/H200, about 6 minutes:
#   record doom-cpu's training data again (seed 1, as session 1), measure the shipped autoencoder,
#   then fine-tune only its decoder against a PatchGAN discriminator for 3 minutes at two
#   adversarial weights side by side on the one GPU (the autoencoder uses a fraction of it), and
#   measure PSNR and sharpness of each on held-out maps. The encoder stays bit-identical, so every
#   latent cache and transformer trained on checkpoints/doom-gpu's latents stays valid.
# Run from the repository root with .whl carried:  bash scripts/gpu/session_ae_gan.sh
# INIT=DIR continues from a brought-back run (its decoder; the discriminator starts afresh, so
# ADV_START steps of reconstruction only let it catch up); WEIGHTS, AE_MIN as below.
source scripts/gpu/common.sh
set +e  # one failed step must not lose the rest
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
AE_MIN=${AE_MIN:-3}
INIT=${INIT:-checkpoints/doom-gpu}
ADV_START=${ADV_START:-300}
NO_REVISIT=1 record_data 150000

log "the shipped autoencoder"
$MW eval autoencoder --checkpoint checkpoints/doom-gpu --data "$DATA-heldout" --split heldout --max-frames 2048 \
    --json $EVAL/ae-doom-cpu.json | head -2
log "decoder-only GAN fine-tunes (${AE_MIN} min each, in parallel)"
for W in ${WEIGHTS:-0.1 0.5}; do
  $MW train autoencoder --init $INIT --decoder-only --adv-weight $W --adv-start $ADV_START \
      --data "$DATA" --out $RUNS/ae-gan-$W --batch-size 48 --lr 1e-4 --warmup-steps 100 \
      --max-steps 100000 --time-limit "$AE_MIN" --no-progress --log-every 50 > $RUNS/ae-gan-$W.log 2>&1 &
done
wait
for W in ${WEIGHTS:-0.1 0.5}; do
  tail -2 $RUNS/ae-gan-$W.log; tail -1 $RUNS/ae-gan-$W/metrics.csv
  $MW eval autoencoder --checkpoint $RUNS/ae-gan-$W --data "$DATA-heldout" --split heldout --max-frames 2048 \
      --json $EVAL/ae-gan-$W.json | head -2
  bring_back ae-gan-$W $RUNS/ae-gan-$W
done
cp $EVAL/ae-*.json "$OUT/"
log "done"; ls -la "$OUT"
