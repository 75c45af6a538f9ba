# GPU session 1: data, autoencoder, teachers for doom-cpu and doom-small (in parallel on one GPU).
# Run on the device machine from the repo root:  bash scripts/gpu/session1.sh
source scripts/gpu/common.sh
DEADLINE=${DEADLINE:-560}
record_data ${FRAMES:-150000}
log "autoencoder"
$MW train autoencoder --preset doom-cpu --data "$DATA" --out $RUNS/ae --batch-size 48 --lr 4e-4 \
    --max-steps 100000 --time-limit "${AE_MIN:-2.8}" --warmup-steps 200 --no-progress --log-every 50 2>&1 | tail -3
tail -2 $RUNS/ae/metrics.csv
$MW eval autoencoder --checkpoint $RUNS/ae --data "$DATA-heldout" --split heldout --max-frames 2048 --json $RUNS/ae/eval.json | tail -12
bring_back ae $RUNS/ae
log "teachers (doom-cpu and doom-small at once)"
LIMIT=$(minutes_until $DEADLINE 25)
for p in doom-cpu doom-small; do
  $MW train teacher --preset $p --data "$DATA" --autoencoder $RUNS/ae --out $RUNS/teacher-$p --batch-size 32 \
      --max-steps 100000 --time-limit "$LIMIT" --no-progress --log-every 50 > $RUNS/teacher-$p.log 2>&1 &
done
wait
for p in doom-cpu doom-small; do tail -3 $RUNS/teacher-$p.log; tail -1 $RUNS/teacher-$p/metrics.csv; done
bring_back teacher-doom-cpu $RUNS/teacher-doom-cpu
bring_back teacher-doom-small $RUNS/teacher-doom-small
cp $RUNS/ae/eval.json "$OUT/ae_eval.json"
log "done"; ls -la "$OUT"
