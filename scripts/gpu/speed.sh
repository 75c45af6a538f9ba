# GPU speed (issue 13): one H200, one device command of about 7 minutes (bounded at STOP_AT=500 s).
#   (a) the gpu tests (scripts/gpu/test.sh; SKIP_TESTS=1 leaves them out when the same command
#       already ran them on this tree)
#   (c) bench serve with the shipped doom-gpu bundle: the cudagraph backend with one client over
#       3,500 blocks (10 minutes of play at 17.5 frames/s: the block cost at minute 10), 4 and
#       8 clients (batched: runtime/backends/graph_batch.py) and 8 with --no-batching (one step a
#       pass), and the torch backend's batched 4 and 8 clients beside them
#   (b) bench generate, eager against cudagraph, at the doom-gpu and doom-cpu sizes (random
#       weights of those presets' shapes), and cudagraph over compiled token paths (--compile:
#       worldmodel/model/fused.py)
#   (d) the Wan2.1-1.3B-shape loop at 480x832 (1,560 tokens a frame, 30 layers, 4 steps, blocks of 3,
#       MAG memory of 21 slots): 61 blocks from an empty memory = the first 21 latent frames, then
#       40 steady-state blocks (120 latent frames) at all 21 slots; cudagraph with the token paths
#       compiled first (the new figure; its setup_s holds the compile), then cudagraph and eager,
#       then cudagraph with cuDNN attention first; the GPU time of a steady pass split by kernel kind
#   (e) SECTIONS=train: bench train of the autoencoder stage in both memory layouts
#       (--channels-last) and of the teacher beside its reference (not in the default)
#   (f) SECTIONS=sf: bench train of the Self Forcing stages phase by phase, profiled: dmd
#       compiled at batch 16 (self_forcing.sh's run) and 64, MAG stage 2 (generator, 89 blocks of
#       history: stage2.sh's run) compiled, dmd eager (not in the default; about 5 minutes;
#       NO_EAGER=1 leaves the eager run out, NO_AE=1 the autoencoder benches of (e))
# SECTIONS picks what runs (default "tests serve generate wan"; SKIP_TESTS=1 drops the tests).
# Logs and JSON go to $OUT/speed.tar (the device returns at most 8 files), the table to
# $OUT/summary.txt; the table is printed last.
# Run from the repository root, carrying a folder with the pyzmq wheel (WHEELS=.whl-zmq: the
# bundle's weights leave no room for ViZDoom under the 64 MiB that travels):
#   WHEELS=.whl-zmq bash scripts/gpu/speed.sh
# The compiled runs add each its compile (inductor, cold on a fresh machine) to setup_s, so all four
# sections may no longer fit in one command: the wan section alone is one command
# (SKIP_TESTS=1 SECTIONS=wan bash scripts/gpu/speed.sh), its compiled run first.
source scripts/gpu/common.sh
set +e  # one failed step must not lose the rest: each step is bounded by T
STOP_AT=${STOP_AT:-500}
W=${EVAL:-/tmp/speed}; mkdir -p "$W"
# After every section what is measured so far goes to $OUT, so a command stopped early (the
# device's limit can be below STOP_AT when the session's time runs low) still brings it back.
pack() {
  [ -n "${DRY_RUN:-}" ] && return 0
  tar cf "$OUT/speed.tar" -C "$W" . && $PY scripts/gpu/speed_table.py "$W" > "$OUT/summary.txt" 2>&1
}
WAN="--preset wan-1.3b --height 480 --width 832 --blocks 61 --warmup 2 --first-frames 21 --temporal-compression 4 --profile"

SECTIONS=${SECTIONS:-tests serve generate wan}
[ -n "${SKIP_TESTS:-}" ] && SECTIONS=${SECTIONS//tests/}
on() { [[ " $SECTIONS " == *" $1 "* ]]; }

if on tests; then
  log "(a) gpu tests"
  T env SKIP_WHEELS=1 OUT="$W" bash scripts/gpu/test.sh > "$W/gpu-tests.txt" 2>&1
  tail -4 "$W/gpu-tests.txt"
fi

if on serve; then
log "(c) bench serve, the shipped doom-gpu bundle"
S="--checkpoint ${CHECKPOINT:-checkpoints/doom-gpu} --device cuda --window 50"
T $MW bench serve $S --backend cudagraph --blocks 3500 --window 350 \
    --json $W/serve-doom-gpu-graphs-1.json > $W/serve-doom-gpu-graphs-1.txt 2>&1
for N in 4 8; do
  T $MW bench serve $S --backend torch --clients $N --blocks 100 \
      --json $W/serve-doom-gpu-torch-$N.json > $W/serve-doom-gpu-torch-$N.txt 2>&1
  T $MW bench serve $S --backend cudagraph --clients $N --blocks 100 \
      --json $W/serve-doom-gpu-graphs-$N.json > $W/serve-doom-gpu-graphs-$N.txt 2>&1
done
T $MW bench serve $S --backend cudagraph --clients 8 --blocks 100 --no-batching \
    --json $W/serve-doom-gpu-graphs-8-alone.json > $W/serve-doom-gpu-graphs-8-alone.txt 2>&1
pack
fi

if on generate; then
log "(b) bench generate: eager, CUDA graphs, CUDA graphs over compiled token paths"
for P in doom-gpu doom-cpu; do
  for G in "" --cuda-graphs "--cuda-graphs --compile"; do
    N=gen-$P${G:+-graphs}; [[ "$G" == *--compile* ]] && N=$N-compiled
    T $MW bench generate --preset $P --blocks 100 --warmup 10 $G --json $W/$N.json > $W/$N.txt 2>&1
  done
done
pack
fi

if on wan; then
log "(d) Wan2.1-1.3B shapes at 480x832: cudagraph over compiled token paths, cudagraph, eager"
T $MW bench generate $WAN --cuda-graphs --compile --json $W/gen-wan-graphs-compiled.json \
    > $W/gen-wan-graphs-compiled.txt 2>&1
T $MW bench generate $WAN --cuda-graphs --json $W/gen-wan-graphs.json > $W/gen-wan-graphs.txt 2>&1
T $MW bench generate $WAN --json $W/gen-wan-eager.json > $W/gen-wan-eager.txt 2>&1
T $MW bench generate $WAN --cuda-graphs --attention cudnn --json $W/gen-wan-graphs-cudnn.json \
    > $W/gen-wan-graphs-cudnn.txt 2>&1
pack
fi

if on sf; then
log "(f) bench train: Self Forcing (dmd) compiled at batch 16 and 64 and eager, MAG stage 2 (generator) compiled"
# session 12: eager 1.67 steps/s, compiled 2.42 at batch 16; each run prints as it measures
SF="--preset doom-gpu --steps 9 --warmup 6 --critic-steps 3 --profile"
T $MW bench train --stage dmd $SF --batch-size 16 --clip-blocks 6 --compile on \
    --json $W/train-dmd-16-on.json > $W/train-dmd-16-on.txt 2>&1
T $MW bench train --stage dmd $SF --batch-size 64 --clip-blocks 6 --compile on \
    --json $W/train-dmd-64-on.json > $W/train-dmd-64-on.txt 2>&1
T $MW bench train --stage generator $SF --batch-size 16 --clip-blocks 7 --history-blocks 89 --compile on \
    --json $W/train-generator-16-on.json > $W/train-generator-16-on.txt 2>&1
[ -z "${NO_EAGER:-}" ] && T $MW bench train --stage dmd $SF --batch-size 16 --clip-blocks 6 --compile off \
    --json $W/train-dmd-16-off.json > $W/train-dmd-16-off.txt 2>&1
cat $W/train-dmd-*.txt $W/train-generator-*.txt
pack
fi

if on train; then
log "(e) bench train: the autoencoder stage (as session_ae_gan.sh: batch 48 clips x 3 frames, GAN 0.5) in"
log "    both memory layouts, then the teacher at the issue's shape (dim 512 x 12 layers) beside its reference"
[ -z "${NO_AE:-}" ] && T $MW bench train --stage autoencoder --preset doom-gpu --batch-size 48 --steps 30 --warmup 5 \
    --json $W/train-autoencoder.json > $W/train-autoencoder.txt 2>&1
T $MW bench train --stage teacher --preset doom-gpu --set model.dim=512 model.heads=8 model.layers=12 \
    model.ffn_dim=2048 --batch-size 32 --clip-blocks 4 --steps 40 --warmup 8 --profile \
    --json $W/train-teacher.json > $W/train-teacher.txt 2>&1
cat $W/train-*.txt
pack
fi

log "done"
for f in "$W"/*.txt; do grep -qE "Traceback|Error" "$f" && { echo "--- $f"; tail -5 "$f"; }; done
pack
$PY scripts/gpu/speed_table.py "$W" | tee "$OUT/summary.txt"
