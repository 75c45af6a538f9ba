# GPU, the first of two commands on one warm machine: record the training and held-out data and
# encode the latent cache for autoencoder AE (default checkpoints/doom-gpu), with ViZDoom carried.
# The next command, started within the machine's idle release (30 s: `status` says), finds
# /tmp/data, the cache and the installed wheels in /tmp/site and needs neither ViZDoom nor room
# for it. That is how a script whose checkpoints fill the 64 MiB that travels still records its
# data (stage2.sh: the doom-gpu bundle and its teacher are 56 MiB, ViZDoom 22 MiB):
#   1. move every checkpoint but AE's autoencoder out of the tree (here: bash scripts/gpu/park.sh
#      out checkpoints/doom-gpu16-teacher checkpoints/doom-gpu/generator-*
#      checkpoints/doom-gpu/memory_model-*; `park.sh size .whl` checks the fit), then
#      bash scripts/gpu/prepare.sh          (carrying .whl; about 1.5 minutes)
#   2. put them back (park.sh back), then at once
#      bash scripts/gpu/stage2.sh           (carrying nothing)
source scripts/gpu/common.sh
AE=${AE:-checkpoints/doom-gpu}
prepare_latents "$AE"
[ -z "${DRY_RUN:-}" ] && { du -sh "$DATA" "$DATA-heldout" /tmp/site 2>/dev/null || true; }
log "done: the next command on this machine reuses the data, the cache and /tmp/site"
