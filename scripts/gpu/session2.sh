# GPU session 2: for doom-cpu and doom-small at once, continue the teacher from session 1, then
# ode-init -> memory model (MAG stage 1) -> memory-aware generator (MAG stage 2, DMD).
# Needs the session-1 runs in runs/ (carried).  bash scripts/gpu/session2.sh
source scripts/gpu/common.sh
DEADLINE=${DEADLINE:-550}
NO_REVISIT=1 record_data ${FRAMES:-150000}
COMMON="--data $DATA --autoencoder runs/ae --no-progress --log-every 25 --max-steps 100000"

chain() {
  local p=$1
  $MW train teacher --preset $p $COMMON --init runs/teacher-$p --out $RUNS/teacher-$p --batch-size 32 \
      --warmup-steps 20 --time-limit "$(minutes_until 190)"
  $MW train ode-init --preset $p $COMMON --teacher $RUNS/teacher-$p --out $RUNS/ode-$p --batch-size 16 \
      --set sampler.teacher_steps=8 --warmup-steps 20 --time-limit "$(minutes_until 300)"
  $MW train memory --preset $p $COMMON --init $RUNS/ode-$p --out $RUNS/mem-$p --batch-size 16 \
      --warmup-steps 20 --time-limit "$(minutes_until 400)"
  $MW train generator --preset $p $COMMON --teacher $RUNS/teacher-$p --memory-model $RUNS/mem-$p \
      --out $RUNS/gen-$p --batch-size 8 --lr 5e-5 --critic-steps 2 --warmup-steps 10 \
      --time-limit "$(minutes_until $DEADLINE 30)"
}
for p in doom-cpu doom-small; do chain $p > $RUNS/chain-$p.log 2>&1 & done
wait
for p in doom-cpu doom-small; do
  echo "== $p"; grep -E "stopped at|Error|error" $RUNS/chain-$p.log | tail -8
  for r in teacher ode mem gen; do echo "$r: $(tail -1 $RUNS/$r-$p/metrics.csv 2>/dev/null)"; done
done
bring_back cpu-teacher-mem $RUNS/teacher-doom-cpu $RUNS/mem-doom-cpu
bring_back cpu-gen $RUNS/gen-doom-cpu
for r in teacher mem gen; do bring_back small-$r $RUNS/$r-doom-small; done
cp $RUNS/chain-doom-cpu.log $RUNS/chain-doom-small.log "$OUT/" 2>/dev/null || true
log "done"; ls -la "$OUT"
