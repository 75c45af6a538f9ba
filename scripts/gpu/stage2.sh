# GPU, issues 11 and 12: MAG stage 2 for the shipped generator, so that `mag` memory can be served
# again. Session 9 measured (docs/results.md, "Session 9") that the generator reads the memory
# model's slots 1.9 dB worse than its own K/V, worse the longer the history, and that with `mag` a
# still room collapses within 10 s (with `window` it stays for 2 minutes). It was never trained to
# read those slots. One H200, about 9.5 minutes:
#   (1) `train generator` (MAG stage 2: Self Forcing + DMD, the frozen memory model writes the
#       cache, histories as long as the memory holds via --history-blocks), from
#       checkpoints/doom-gpu's generator and memory model against checkpoints/doom-gpu16-teacher
#   (2) packaged with that memory model and the autoencoder as $RUNS/ship-mag, brought back
#   (3) `eval history` (window / mag / mag w/o stage 1 after 1..30 true blocks), a 60 s still
#       rollout with `mag`, the turn test and next-block of the new bundle
# Run from the repository root, carrying .whl:  bash scripts/gpu/stage2.sh
# The bundle and the teacher (56 MiB) leave no room for ViZDoom (22 MiB) under the 64 MiB that
# travels, so this is the second of two commands on one warm machine: first
# scripts/gpu/prepare.sh (its header says what to move out), then this at once, with docs/media
# parked (`park.sh out docs/media`: 58 MiB travel) and nothing carried; it reuses their data,
# cache and wheels.
# BATCH (default 16), LR (2e-5) and CRITIC_STEPS (3) set the run; session 12's 6 minutes at 16 were
# 274 steps, about 90 generator updates, too few to change anything (docs/results.md).
# INIT=DIR continues from a brought-back stage-2 run (its weights; optimizers and the fake score
# start afresh). STOP_AT bounds the whole command: set it under the device time left.
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-560}
AE=checkpoints/doom-gpu
INIT=${INIT:-checkpoints/doom-gpu}
MEM=${MEM:-checkpoints/doom-gpu}
TEACHER=${TEACHER:-checkpoints/doom-gpu16-teacher}
need_checkpoint "$TEACHER"
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
prepare_latents $AE
COMMON="--preset doom-gpu --data $DATA --autoencoder $AE --max-steps 1000000 --no-progress --log-every 25"
CAPACITY=$($PY -c "from worldmodel.config import preset; print(preset('doom-gpu').memory.capacity_frames)")
CLIP_BLOCKS=${CLIP_BLOCKS:-7}
HISTORY=${HISTORY:-$(( CAPACITY - CLIP_BLOCKS ))}  # history + clip slots = all that `mag` holds
TRAIN_MIN=$(minutes_until $STOP_AT 200)  # leave 200 s for packaging, the evals and packing

log "MAG stage 2 from $INIT: $HISTORY-block histories + $CLIP_BLOCKS-block clips, ${TRAIN_MIN} min"
T $MW train generator $COMMON --init $INIT --teacher $TEACHER --memory-model $MEM --out $RUNS/gen-mag \
    --clip-blocks $CLIP_BLOCKS --history-blocks $HISTORY --history-full-prob 0.5 --batch-size ${BATCH:-16} --lr ${LR:-2e-5} \
    --critic-steps ${CRITIC_STEPS:-3} --warmup-steps 20 --time-limit $TRAIN_MIN --checkpoint-every 2 2>&1 | tail -1
tail -1 $RUNS/gen-mag/metrics.csv
T $MW train package --autoencoder $AE --generator $RUNS/gen-mag --memory-model $MEM --out $RUNS/ship-mag \
    --dtype bfloat16 2>&1 | tail -1
bring_back stage2-gen $RUNS/gen-mag

log "does it read its memory now? eval history, 16 held-out cases"
T $MW eval history --checkpoint $RUNS/ship-mag --data $DATA-heldout --cases 16 --lengths 1,3,8,16,30 \
    --strategies "window,mag,mag w/o stage 1" --json $EVAL/history.json > $EVAL/history.txt 2>&1
sed '/^{/,$d' $EVAL/history.txt
log "60 s with no key pressed, mag memory"
T $MW eval rollout --checkpoint $RUNS/ship-mag --strategy mag --seconds 60 --script still --counterfactuals '' \
    --out $EVAL/still --json $EVAL/still.json > $EVAL/still.txt 2>&1
$PY -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: round(v, 2) for k, v in r.items() if k.startswith('psnr')})" \
    $EVAL/still.json 2>/dev/null || echo "still: no result"
bundle_evals $RUNS/ship-mag
[ -z "${DRY_RUN:-}" ] && { rm -f $EVAL/still/*.mp4; tar cf $OUT/evals.tar -C $EVAL .; }
$PY scripts/gpu/summary.py turns $EVAL/turns.json
$PY scripts/gpu/summary.py next-block $EVAL/next-block.json
log "done"; ls -la "$OUT"
