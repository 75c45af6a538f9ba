# GPU, issue 11: Self Forcing for the shipped generator, which collapses when left alone (session
# 8: a still room turns to texture within about 10 s; it was distilled with true histories only).
# One H200, about 9.5 minutes:
#   (1) the `dmd` stage from checkpoints/doom-gpu's generator against checkpoints/doom-gpu-teacher:
#       the generator rolls out CLIP_BLOCKS-1 blocks from its own frames after one real block and
#       is moved by distribution matching (teacher = real score, a fake score trained beside it)
#   (2) the memory model (MAG stage 1) again on the new generator; packaged as runs/ship-doom-gpu
#   (3) the tests marked gpu, then a 60 s rollout with no key pressed (the collapse test), the turn test (8 held-out cases)
#       and next-block prediction (32 held-out cases) of the new bundle
# Run from the repository root, carrying .whl:  bash scripts/gpu/self_forcing.sh
# The tree and .whl must fit in the 64 MiB that travels: move checkpoints/doom-gpu's
# memory_model shards and checkpoints/ae16-wip out of the tree for the command.
# STOP_AT bounds the whole command: set it under the device time left (`status` tells).
source scripts/gpu/common.sh
set +e
STOP_AT=${STOP_AT:-545}
AE=checkpoints/doom-gpu
INIT=${INIT:-checkpoints/doom-gpu}
TEACHER=${TEACHER:-checkpoints/doom-gpu-teacher}
EVAL=${EVAL:-/tmp/evals}; mkdir -p $EVAL
prepare_latents $AE
COMMON="--preset doom-gpu --data $DATA --autoencoder $AE --max-steps 1000000 --no-progress --log-every 50"

log "Self Forcing (dmd) from $INIT, ${CLIP_BLOCKS:=6} blocks a clip (${DMD_MIN:=4.5} min)"
T $MW train dmd $COMMON --init $INIT --teacher $TEACHER --out $RUNS/dmd-gpu --clip-blocks $CLIP_BLOCKS \
    --batch-size 16 --lr 2e-5 --critic-steps 5 --warmup-steps 20 --time-limit $DMD_MIN --checkpoint-every 2 2>&1 | tail -1
tail -1 $RUNS/dmd-gpu/metrics.csv
log "memory model from the new generator (${MEM_MIN:=1.3} min)"
T $MW train memory $COMMON --init $RUNS/dmd-gpu --out $RUNS/mem-gpu --batch-size 32 --lr 1e-4 \
    --warmup-steps 50 --time-limit $MEM_MIN 2>&1 | tail -1
T $MW train package --autoencoder $AE --generator $RUNS/dmd-gpu --memory-model $RUNS/mem-gpu \
    --out $RUNS/ship-doom-gpu --dtype bfloat16 2>&1 | tail -1
bring_back gen-mem-gpu $RUNS/dmd-gpu $RUNS/mem-gpu

log "tests marked gpu (session 8 changed the CUDA inference paths: batched modulations, heads-first)"
T env SKIP_WHEELS=1 bash scripts/gpu/test.sh > $EVAL/gpu-tests.txt 2>&1
tail -3 $EVAL/gpu-tests.txt
log "60 s with no key pressed; turn test; next block"
T $MW eval rollout --checkpoint $RUNS/ship-doom-gpu --seconds 60 --script still --out $EVAL/still \
    --json $EVAL/still.json > $EVAL/still.txt 2>&1
T $MW eval turns --checkpoint $RUNS/ship-doom-gpu --cases 8 --out $EVAL/turns --json $EVAL/turns.json \
    > $EVAL/turns.txt 2>&1
T $MW eval next-block --checkpoint $RUNS/ship-doom-gpu --data $DATA-heldout --cases 32 \
    --json $EVAL/next-block.json > $EVAL/next-block.txt 2>&1
[ -z "${DRY_RUN:-}" ] && { rm -f $EVAL/still/*.mp4; tar cf $OUT/evals.tar -C $EVAL .; }
$PY scripts/gpu/summary.py turns $EVAL/turns.json
$PY scripts/gpu/summary.py next-block $EVAL/next-block.json
$PY -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: round(v, 2) for k, v in r.items() if k.startswith('psnr')})" \
    $EVAL/still.json 2>/dev/null || echo "still: no result"
log "done"; ls -la "$OUT"
