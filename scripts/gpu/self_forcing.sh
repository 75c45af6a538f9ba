# GPU, issue 11: Self Forcing for the shipped generator, which collapses when left alone (session
# 8: a still room turns to texture within about 10 s; it was distilled with true histories only).
# One H200, about 9.5 minutes:
#   (1) the `dmd` stage from checkpoints/doom-gpu's generator against checkpoints/doom-gpu16-teacher:
#       the generator rolls out CLIP_BLOCKS-1 blocks from its own frames after one real block and
#       is moved by distribution matching (teacher = real score, a fake score trained beside it)
#   (2) the memory model (MAG stage 1) again on the new generator; packaged as runs/ship-doom-gpu
#   (3) the tests marked gpu, then a 60 s rollout with no key pressed (the collapse test), the turn test (8 held-out cases)
#       and next-block prediction (32 held-out cases) of the new bundle
# The bundle, the teacher and ViZDoom do not fit together in the 64 MiB that travels, so this is
# the second of two commands on one warm machine, as stage2.sh: first scripts/gpu/prepare.sh
# (carrying .whl), then at once, with docs/media parked and nothing carried:
#   bash scripts/gpu/self_forcing.sh
# STOP_AT bounds the whole command: set it under the device time left (`status` tells).
# DMD_MIN, CRITIC_STEPS (fake-score updates per generator update, default 5), LR and BATCH (default
# 16; while launches bound a step a larger one costs little: `bench train --stage dmd`) set the run:
# session 9's 4.5 minutes at 5 were about 100 generator updates, too few to move anything
# (docs/results.md, session 11); DMD_MIN=7 CRITIC_STEPS=2 gives several times more.
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-545}
AE=checkpoints/doom-gpu
INIT=${INIT:-checkpoints/doom-gpu}
TEACHER=${TEACHER:-checkpoints/doom-gpu16-teacher}
need_checkpoint "$TEACHER"
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
prepare_latents $AE
COMMON="--preset doom-gpu --data $DATA --autoencoder $AE --max-steps 1000000 --no-progress --log-every 50"

log "Self Forcing (dmd) from $INIT, ${CLIP_BLOCKS:=6} blocks a clip (${DMD_MIN:=4.5} min)"
T $MW train dmd $COMMON --init $INIT --teacher $TEACHER --out $RUNS/dmd-gpu --clip-blocks $CLIP_BLOCKS \
    --batch-size ${BATCH:-16} --lr ${LR:-2e-5} --critic-steps ${CRITIC_STEPS:-5} --warmup-steps 20 --time-limit $DMD_MIN \
    --checkpoint-every 2 2>&1 | tail -1
tail -1 $RUNS/dmd-gpu/metrics.csv
MEM_MIN=${MEM_MIN:-1.3} memory_and_package $RUNS/dmd-gpu
gpu_tests  # session 8 changed CUDA inference paths (batched modulations, heads-first) untested there
log "60 s with no key pressed; turn test; next block"
T $MW eval rollout --checkpoint $RUNS/ship-doom-gpu --seconds 60 --script still --out $EVAL/still \
    --json $EVAL/still.json > $EVAL/still.txt 2>&1
bundle_evals $RUNS/ship-doom-gpu
[ -z "${DRY_RUN:-}" ] && { rm -f $EVAL/still/*.mp4; tar cf $OUT/evals.tar -C $EVAL .; }
$PY scripts/gpu/summary.py turns $EVAL/turns.json
$PY scripts/gpu/summary.py next-block $EVAL/next-block.json
$PY -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: round(v, 2) for k, v in r.items() if k.startswith('psnr')})" \
    $EVAL/still.json 2>/dev/null || echo "still: no result"
log "done"; ls -la "$OUT"
