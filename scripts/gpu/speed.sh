# GPU speed (issue 13): one H200, one device command of about 7 minutes (bounded at STOP_AT=500 s).
#   (a) the gpu tests (scripts/gpu/test.sh)
#   (b) bench generate, eager against cudagraph, at the doom-cpu and doom-small sizes (random
#       weights of the shipped checkpoints' shapes)
#   (c) bench serve with the shipped checkpoints and the cudagraph backend: one client (doom-cpu,
#       doom-small), 4 and 8 clients (the cudagraph backend steps sessions one after another);
#       the torch backend's batched 8 clients beside them
#   (d) the Wan2.1-1.3B-shape loop at 480x832 (1,560 tokens a frame, 30 layers, 4 steps, blocks of 3,
#       MAG memory of 21 slots): 61 blocks from an empty memory = the first 21 latent frames, then
#       40 steady-state blocks (120 latent frames) at all 21 slots; cudagraph and eager, then
#       cudagraph with cuDNN attention first; the GPU time of a steady pass split by kernel kind
# Logs and JSON go to $OUT/speed.tar (the device returns at most 8 files), the table to
# $OUT/summary.txt; the table is printed last.
# Run from the repository root, carrying .whl (pyzmq + ViZDoom; see make_wheels.sh):
#   bash scripts/gpu/speed.sh
source scripts/gpu/common.sh
set +e  # one failed step must not lose the rest: each step is bounded by T
STOP_AT=${STOP_AT:-500}
W=${EVAL:-/tmp/speed}; mkdir -p "$W"
WAN="--preset wan-1.3b --height 480 --width 832 --blocks 61 --warmup 2 --first-frames 21 --temporal-compression 4 --profile"

log "(a) gpu tests"
T env SKIP_WHEELS=1 OUT="$W" bash scripts/gpu/test.sh > "$W/gpu-tests.txt" 2>&1
tail -4 "$W/gpu-tests.txt"

log "(d) Wan2.1-1.3B shapes at 480x832: cudagraph, eager"
T $MW bench generate $WAN --cuda-graphs --json $W/gen-wan-graphs.json > $W/gen-wan-graphs.txt 2>&1
T $MW bench generate $WAN --json $W/gen-wan-eager.json > $W/gen-wan-eager.txt 2>&1

log "(b) bench generate: eager and CUDA graphs"
for P in doom-cpu doom-small; do
  for G in "" --cuda-graphs; do
    T $MW bench generate --preset $P --blocks 100 --warmup 10 $G --json $W/gen-$P${G:+-graphs}.json \
        > $W/gen-$P${G:+-graphs}.txt 2>&1
  done
done

log "(c) bench serve, shipped checkpoints, cudagraph backend"
S="--device cuda --window 50"
T $MW bench serve --checkpoint checkpoints/doom-gpu $S --backend cudagraph --blocks 400 \
    --json $W/serve-doom-cpu-graphs-1.json > $W/serve-doom-cpu-graphs-1.txt 2>&1
for N in 4 8; do
  T $MW bench serve --checkpoint checkpoints/doom-gpu $S --backend cudagraph --clients $N --blocks 100 \
      --json $W/serve-doom-cpu-graphs-$N.json > $W/serve-doom-cpu-graphs-$N.txt 2>&1
done
T $MW bench serve --checkpoint checkpoints/doom-gpu $S --backend torch --clients 8 --blocks 100 \
    --json $W/serve-doom-cpu-torch-8.json > $W/serve-doom-cpu-torch-8.txt 2>&1

log "(d) Wan shapes, cudagraph with cuDNN attention first (if time is left)"
T $MW bench generate $WAN --cuda-graphs --attention cudnn --json $W/gen-wan-graphs-cudnn.json \
    > $W/gen-wan-graphs-cudnn.txt 2>&1

log "done"
for f in "$W"/*.txt; do grep -qE "Traceback|Error" "$f" && { echo "--- $f"; tail -5 "$f"; }; done
[ -z "${DRY_RUN:-}" ] && tar cf "$OUT/speed.tar" -C "$W" .
$PY scripts/gpu/speed_table.py "$W" | tee "$OUT/summary.txt"
