# GPU, issue 11 (session 14): the doom-gpu teacher (8.6M parameters, 50 tokens a frame, the
# shipped recipe) trained on the latents of the 16-channel autoencoder, after ae16.sh on the same
# warm machine. The 8-channel autoencoder's ceiling (29.4 dB on moving frames) is below what
# copy-last + 2 dB on the mean needs (docs/results.md, session 11), so every model is redone on
# the better one. One H200, at most STOP_AT seconds:
#   (1) the latent cache of AE (default: the run ae16.sh picked, $RUNS/ae16-picked) over the data
#       that ae16.sh recorded on this machine
#   (2) the teacher: from scratch, or RESUME=1 continues $RUNS/teacher16 exactly (a machine still
#       warm from the previous command), or INIT=DIR from brought-back weights (fresh optimizer)
#   (3) EVALS: the turn test (8 held-out cases, 20 Euler steps) and, with EVALS="turns next-block",
#       next-block prediction (32 held-out cases, copy-last beside it)
#   (4) GPU_TESTS_K="expr": the tests marked gpu that pytest -k selects (ZeroMQ's wheel needed)
# BATCH (default 32) and LR (default 3e-4) set the teacher's batch in clips and learning rate.
# Every VAL_EVERY steps (default 500) the EMA weights' loss on 256 fixed clips of the held-out maps
# is logged as val_loss in metrics.csv (session 15; not yet run on a GPU): flat while the training
# loss falls would mean the teacher now fits the training maps and needs more data: FRAMES=500000
# (and a new DATA on a warm machine; common.sh's prepare_latents).
# The teacher (and with AE_BACK=1 the autoencoder) come back as tars, the evals as teacher-evals.tar.
# Run from the repository root within the machine's idle release after ae16.sh, carrying nothing
# (or AE=DIR carried, on a fresh machine after prepare.sh):
#   bash scripts/gpu/teacher16.sh
# On a fresh machine, continuing the committed teacher (it records the data itself), carrying .whl
# with checkpoints/doom-gpu's generator-* and memory_model-* parked (park.sh; 56 MiB travel):
#   INIT=checkpoints/doom-gpu16-teacher AE=checkpoints/doom-gpu16-teacher BATCH=64 bash scripts/gpu/teacher16.sh
# then, on the same warm machine within its idle release, again and again:
#   RESUME=1 AE=checkpoints/doom-gpu16-teacher BATCH=64 bash scripts/gpu/teacher16.sh
source scripts/gpu/common.sh
set +e  # one failed step must not lose the rest
STOP_AT=${STOP_AT:-560}
AE=${AE:-$RUNS/ae16-picked}
EVALS=${EVALS:-turns}
EVAL=${EVAL:-/tmp/evals16}; mkdir -p $EVAL
if [ -z "${DRY_RUN:-}" ] && [ ! -e "$AE/checkpoint" ] && [ ! -e "$AE/autoencoder.safetensors" ]; then
  log "no autoencoder at $AE: run ae16.sh first on this machine, or carry one and set AE"; exit 4
fi
[ -z "${DRY_RUN:-}" ] && AE=$(readlink -f "$AE")
prepare_latents "$AE"
AE_SET="--set autoencoder.latent_channels=16 --set model.latent_channels=16"
COMMON="--preset doom-gpu $AE_SET --data $DATA --autoencoder $AE --max-steps 1000000 --no-progress --log-every 100"

# evals and packing after training: about a minute per eval, half a minute for the tars
RESERVE=$(( 40 + 60 * $(echo $EVALS | wc -w) ))
[ -n "${GPU_TESTS_K:-}" ] && RESERVE=$(( RESERVE + ${TESTS_S:-120} ))
TRAIN_MIN=$(minutes_until $STOP_AT $RESERVE)
if [ -n "${RESUME:-}" ]; then
  START="--resume"; log "(2) teacher continued exactly from $RUNS/teacher16, $TRAIN_MIN min"
elif [ -n "${INIT:-}" ]; then
  START="--init $INIT"; log "(2) teacher from the weights in $INIT, $TRAIN_MIN min"
else
  START=""; log "(2) teacher from scratch, $TRAIN_MIN min"
fi
T $MW train teacher $COMMON $START --out $RUNS/teacher16 --batch-size ${BATCH:-32} --clip-blocks 4 --lr ${LR:-3e-4} \
    --warmup-steps 100 --ema-decay 0.998 --time-limit $TRAIN_MIN --checkpoint-every 2 \
    --val-data $DATA-heldout --val-every ${VAL_EVERY:-500} > $RUNS/teacher16.log 2>&1
tail -2 $RUNS/teacher16.log; tail -1 $RUNS/teacher16/metrics.csv
[ -z "${DRY_RUN:-}" ] && cp $RUNS/teacher16/metrics.csv $EVAL/teacher16-metrics.csv
bring_back teacher16 $RUNS/teacher16
[ -n "${AE_BACK:-}" ] && bring_back ae16-picked "$AE"

if [[ " $EVALS " == *" turns "* ]]; then
  log "(3) turn test, 8 held-out cases"
  T $MW eval turns --teacher $RUNS/teacher16 --autoencoder $AE --teacher-steps 20 --cases 8 \
      --out $EVAL/turns --json $EVAL/turns.json > $EVAL/turns.txt 2>&1
fi
if [[ " $EVALS " == *" next-block "* ]]; then
  log "(3) next-block, 32 held-out cases"
  T $MW eval next-block --teacher $RUNS/teacher16 --autoencoder $AE --teacher-steps 20 --data $DATA-heldout \
      --cases 32 --json $EVAL/next-block.json > $EVAL/next-block.txt 2>&1
fi
[ -z "${DRY_RUN:-}" ] && tar cf $OUT/teacher-evals.tar -C $EVAL .
if [ -n "${GPU_TESTS_K:-}" ]; then
  log "(4) tests marked gpu, -k '$GPU_TESTS_K'"
  T env SKIP_WHEELS=1 OUT=$EVAL bash scripts/gpu/test.sh > $EVAL/gpu-tests.txt 2>&1
  tail -4 $EVAL/gpu-tests.txt
  [ -z "${DRY_RUN:-}" ] && tar cf $OUT/teacher-evals.tar -C $EVAL .
fi
$PY scripts/gpu/summary.py turns $EVAL/turns.json
[[ " $EVALS " == *" next-block "* ]] && $PY scripts/gpu/summary.py next-block $EVAL/next-block.json
log "done"; ls -la "$OUT"
