# GPU session 4: speed figures of the shipped checkpoints and of the generator loop at each preset's
# size.  bash scripts/gpu/session4.sh   (needs only the pyzmq wheel in .whl)
source scripts/gpu/common.sh
log "generator loop, random weights"
for p in doom-cpu doom-small; do
  $MW bench generate --preset $p --blocks 200 --json $OUT/bench-gen-$p.json | grep -E "preset|frames_per|block_ms|machine"
done
$MW bench generate --preset wan-1.3b --height 480 --width 832 --blocks 12 --warmup 3 --json $OUT/bench-gen-wan.json | grep -E "frames_per|block_ms"
log "server over loopback ZeroMQ, shipped checkpoints; 3500 blocks = 10 minutes of play at 17.5 frames/s"
$MW bench serve --checkpoint checkpoints/doom-cpu --device cuda --blocks 3500 --window 200 --json $OUT/bench-serve-doom-cpu.json 2>&1 | tail -12
$MW bench serve --checkpoint checkpoints/doom-small --device cuda --blocks 600 --window 100 --json $OUT/bench-serve-doom-small.json 2>&1 | tail -12
log "done"
