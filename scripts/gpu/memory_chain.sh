# GPU: the MAG memory chain on a new teacher (issue 12, items 1-3) — NOT RUN YET. One H100/H200.
# Why it comes first now (session 9): the shipped generator was never trained to read the memory
# model's slots (no stage 2), and `magworld eval history` shows it reads them 2.2 dB worse than its
# own KV (one block of history) and gets worse the longer the history; left alone with `mag` a
# still room collapses within 10 s, with `window` it stays for 2 minutes.
#   stage 1  memory models for B = 1, 3, 4, 5, the same time each, scored by `eval memory`
#            (the paper's Table 4 analogue: slot PSNR against the autoencoder ceiling)
#   stage 2  the memory-aware generator on capacity-length memories (--history-blocks: the clip's
#            past compressed by the B = 3 memory model into slots; sampled sub-histories of them)
#   memorypack  the MemoryPack baseline, trained for stage 1 + stage 2's time (the same budget)
#   revisit  every row — none, window, full, MAG w/o stage 1, MAG, MAG w/o retrieval, MAG all
#            slots, MemoryPack, copy-last — on the 64-case benchmark and on long-away/look-first cases
# Each part stays under the device command's 10 minutes and resumes its runs where they stopped
# (runs live in $RUNS; keep the machine warm between parts or carry $RUNS):
#   PARTS="data stage1" bash scripts/gpu/memory_chain.sh
#   PARTS="data stage2" bash scripts/gpu/memory_chain.sh      # again until gen-long reaches its time
#   PARTS="data stage2 check" ...  also `eval history` and a 60 s still rollout of the stage-2 bundle
#   BS="3" PARTS="data stage1 stage2" ...   only the B = 3 memory model (what stage 2 reads), then stage 2
#   PARTS="data memorypack revisit" bash scripts/gpu/memory_chain.sh
#   PARTS="data revisit-long" bash scripts/gpu/memory_chain.sh
# ("data" re-records the same data set only when $DATA is missing, so it is cheap to repeat.)
# TEACHER, AE (the autoencoder run or checkpoint), ODE (a 4-step generator of the same model, for
# MemoryPack) and PRESET default to the shipped 16-channel doom-gpu bundle and its teacher (session
# 15); with them and ViZDoom over the 64 MiB that travels, run scripts/gpu/prepare.sh first on the
# same machine, as stage2.sh does. DRY_RUN=1 parses every command line and runs nothing.
source scripts/gpu/common.sh
set +e  # one failed step must not lose the rest: each long step is bounded by T
PARTS=${PARTS:-data stage1 stage2 memorypack revisit revisit-long}
PRESET=${PRESET:-doom-gpu}
AE=${AE:-checkpoints/doom-gpu}
TEACHER=${TEACHER:-checkpoints/doom-gpu16-teacher}
need_checkpoint "$TEACHER"
ODE=${ODE:-checkpoints/doom-gpu}  # the shipped 4-step generator of the same model
MEM_INIT=${MEM_INIT:-$TEACHER}  # stage 1 starts from the teacher's weights
MP_INIT=${MP_INIT:-$ODE}        # MemoryPack starts from a 4-step generator
EVAL=${EVAL:-/tmp/evals}; mkdir -p "$EVAL"
FRAMES=${FRAMES:-150000}; RES=${RES:-160x120}; CASES=${CASES:-64}; LONG_CASES=${LONG_CASES:-32}
STEPS=${STEPS:-100000}       # step cap of every run; the time limits below are what bind
STAGE1_MIN=${STAGE1_MIN:-1.2}  # minutes per memory model (each B)
STAGE2_MIN=${STAGE2_MIN:-6.0}  # minutes of stage 2 in all (resumed across parts)
CLIP_BLOCKS=${CLIP_BLOCKS:-7}  # stage 2's trained clip: 1 context block + 2 chunks of 3
CAPACITY=$($PY -c "from worldmodel.config import preset; print(preset('$PRESET').memory.capacity_frames)")
HISTORY=${HISTORY:-$(( CAPACITY - CLIP_BLOCKS ))}  # history + clip slots = what `mag (all slots)` can hold
ROWS="none,window,full,mag w/o stage 1,mag,mag (recent only),mag (all slots)"
SET=${SET:-}  # config overrides for every training run, e.g. "--set model.patch=[1,3,4]"
COMMON="--preset $PRESET $SET --data $DATA --autoencoder $AE --no-progress --log-every 25 --max-steps $STEPS"
has() { [[ " $PARTS " == *" $1 "* ]]; }
resume() { [ -f "$1/checkpoint/config.json" ] && echo --resume; }  # continue a run that exists
log "preset $PRESET: memory capacity $CAPACITY slots; stage 2 history $HISTORY blocks + clip $CLIP_BLOCKS"

if has data && { [ -n "${DRY_RUN:-}" ] || [ ! -f "$DATA/dataset.json" ]; }; then
  log "recording training data, the 64-case benchmark and the long-away/look-first cases"
  $MW data record --policy mix --frames $FRAMES --workers ${WORKERS:-15} --seed 1 --resolution $RES --out "$DATA" 2>&1 | tail -2
  $MW data record --policy mix --frames $(( FRAMES / 25 )) --workers 4 --seed 2 --resolution $RES --out "$DATA-heldout" \
      --maps freedoom1.wad:E2M3 freedoom1.wad:E4M5 freedoom2.wad:MAP07 freedoom2.wad:MAP19 2>&1 | tail -1
  $MW data revisit-bench --cases $CASES --seed 0 --resolution $RES --out "$DATA-revisit" 2>&1 | tail -1
  $MW data revisit-bench --cases $LONG_CASES --seed 1 --kinds long-away look-first --resolution $RES \
      --out "$DATA-revisit-long" 2>&1 | tail -1
fi

if has stage1; then
  for B in ${BS:-1 3 4 5}; do
    log "stage 1: memory model, B = $B ($STAGE1_MIN min)"
    T $MW train memory $COMMON --init $MEM_INIT --out $RUNS/mem-b$B --set model.block_frames=$B --batch-size 16 \
        --warmup-steps 20 --time-limit $STAGE1_MIN $(resume $RUNS/mem-b$B) 2>&1 | grep -E "stopped|Error"
    # packaged as its own generator, so that the checkpoint's block size is B
    $MW train package --autoencoder $AE --generator $RUNS/mem-b$B --generator-name memory_model \
        --memory-model $RUNS/mem-b$B --out $RUNS/ship-mem-b$B > /dev/null
    T $MW eval memory --checkpoint $RUNS/ship-mem-b$B --data "$DATA-heldout" --cases 64 --blocks $(( 12 / B )) \
        --json $EVAL/memory-b$B.json > /dev/null
    [ -n "${DRY_RUN:-}" ] || $PY scripts/gpu/summary.py memory $EVAL/memory-b$B.json
  done
  bring_back memory-chain-stage1 $RUNS/mem-b1 $RUNS/mem-b3 $RUNS/mem-b4 $RUNS/mem-b5
fi

if has stage2; then
  # --time-limit counts from each command's start: a resumed part adds its own minutes, so
  # `--max-steps` (not the limit) is what a second part should raise if more steps are wanted.
  log "stage 2: generator on $HISTORY-block histories + $CLIP_BLOCKS-block clips ($STAGE2_MIN min this part)"
  T $MW train generator $COMMON --teacher $TEACHER --memory-model $RUNS/mem-b3 --out $RUNS/gen-long \
      --clip-blocks $CLIP_BLOCKS --history-blocks $HISTORY --history-full-prob 0.5 --batch-size 16 \
      --warmup-steps 20 --time-limit $STAGE2_MIN $(resume $RUNS/gen-long) 2>&1 | grep -E "stopped|Error"
  $MW train package --autoencoder $AE --generator $RUNS/gen-long --memory-model $RUNS/mem-b3 \
      --out $RUNS/ship-mag > /dev/null
  bring_back memory-chain-stage2 $RUNS/gen-long
fi

if has memorypack; then
  MP_MIN=$($PY -c "print($STAGE1_MIN + $STAGE2_MIN)")
  log "MemoryPack from $MP_INIT, $MP_MIN min (MAG: stage 1 + stage 2)"
  T $MW train memorypack $COMMON --init $MP_INIT --out $RUNS/mp --batch-size 16 --warmup-steps 20 \
      --time-limit $MP_MIN $(resume $RUNS/mp) 2>&1 | grep -E "stopped|Error"
  $MW train package --autoencoder $AE --generator $RUNS/mp --out $RUNS/ship-mp > /dev/null
  bring_back memory-chain-memorypack $RUNS/mp
fi

if has check; then
  log "the stage-2 bundle: next block after 1..30 true history blocks; 60 s with no key pressed"
  T $MW eval history --checkpoint $RUNS/ship-mag --data "$DATA-heldout" --cases 16 --lengths 1,3,8,16,30 \
      --strategies window,mag --json $EVAL/history.json 2>&1 | sed '/^{/,$d'
  T $MW eval rollout --checkpoint $RUNS/ship-mag --seconds 60 --script still --counterfactuals '' \
      --out $EVAL/still --json $EVAL/still.json > $EVAL/still.txt 2>&1
  $PY -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: round(v, 2) for k, v in r.items() if k.startswith('psnr')})" \
      $EVAL/still.json 2>/dev/null || echo "still: no result"
  [ -n "${DRY_RUN:-}" ] || tar cf $OUT/memory-chain-check.tar -C $EVAL .
fi

for BENCH in revisit revisit-long; do
  has $BENCH || continue
  N=$CASES; [ $BENCH = revisit-long ] && N=$LONG_CASES
  log "revisit table on $BENCH ($N cases), every row"
  # the tables only: the JSON that follows them goes to --json
  T $MW eval revisit --checkpoint $RUNS/ship-mag --bench "$DATA-$BENCH" --cases $N --strategies "$ROWS" \
      --memorypack $RUNS/ship-mp --plot $EVAL/$BENCH-since-seen.png --json $EVAL/$BENCH.json | sed '/^{/,$d'
  [ -n "${DRY_RUN:-}" ] || tar cf $OUT/memory-chain-$BENCH.tar -C $EVAL .
done
log "done"; ls -la "$OUT"
