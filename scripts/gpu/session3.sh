# GPU session 3: doom-cpu alone (doom-small took 4x the GPU time per step in session 2):
# teacher (continued) -> ode-init -> memory model -> MAG generator; compare the ode-init and the
# DMD generator on next-block prediction; GPU speed figures.  bash scripts/gpu/session3.sh
source scripts/gpu/common.sh
DEADLINE=${DEADLINE:-470}
P=doom-cpu
NO_REVISIT=1 record_data ${FRAMES:-150000}
COMMON="--preset $P --data $DATA --autoencoder runs/ae --no-progress --log-every 25 --max-steps 100000"
$MW train teacher $COMMON --init runs/s2/teacher-$P --out $RUNS/teacher --batch-size 32 --warmup-steps 20 \
    --time-limit "$(minutes_until 170)" 2>&1 | grep stopped
$MW train ode-init $COMMON --teacher $RUNS/teacher --init runs/s2/gen-$P --out $RUNS/ode --batch-size 16 \
    --set sampler.teacher_steps=8 --warmup-steps 20 --time-limit "$(minutes_until 250)" 2>&1 | grep stopped
$MW train memory $COMMON --init $RUNS/ode --out $RUNS/mem --batch-size 16 --warmup-steps 20 \
    --time-limit "$(minutes_until 330)" 2>&1 | grep stopped
$MW train generator $COMMON --teacher $RUNS/teacher --memory-model $RUNS/mem --out $RUNS/gen \
    --batch-size 8 --lr 5e-5 --critic-steps 2 --warmup-steps 10 --time-limit "$(minutes_until $DEADLINE)" 2>&1 | grep stopped
for r in teacher ode mem gen; do echo "$r: $(tail -1 $RUNS/$r/metrics.csv)"; done
bring_back s3-teacher-mem $RUNS/teacher $RUNS/mem
bring_back s3-gen-ode $RUNS/gen $RUNS/ode

log "which generator predicts better: ode-init or DMD (both reading the memory model's cache)"
for g in ode gen; do
  $MW train package --autoencoder runs/ae --generator $RUNS/$g --memory-model $RUNS/mem --out /tmp/ship-$g > /dev/null
  $MW eval next-block --checkpoint /tmp/ship-$g --data "$DATA-heldout" --cases 64 --strategy mag \
      --json $OUT/next-block-$g.json > /dev/null
  python3 -c "import json,sys; r=json.load(open('$OUT/next-block-$g.json'))['results']; print('$g', {k: round(v['psnr']['mean'], 2) for k, v in r.items()})"
done

log "speed (random weights where the weights do not matter)"
$MW bench generate --preset doom-cpu --blocks 100 --json $OUT/bench-gen-doom-cpu.json | grep -E "frames_per|block_ms|machine"
$MW bench generate --preset doom-small --blocks 100 --json $OUT/bench-gen-doom-small.json | grep -E "frames_per|block_ms"
$MW bench generate --preset wan-1.3b --height 480 --width 832 --blocks 12 --warmup 3 --json $OUT/bench-gen-wan.json | grep -E "frames_per|block_ms"
$MW bench serve --checkpoint /tmp/ship-gen --device cuda --blocks 3600 --window 200 --json $OUT/bench-serve-doom-cpu.json 2>&1 | tail -8
log "done"; ls -la "$OUT"
