# Where the training time goes (teacher step, both attention paths).  bash scripts/gpu/profile.sh
source scripts/gpu/common.sh
$MW data record --policy mix --frames 30000 --workers 15 --seed 1 --out "$DATA" 2>&1 | tail -1
P="python3 scripts/gpu/profile_step.py $DATA runs/ae"
$P teacher doom-cpu 32 30
MAGWORLD_DENSE_MASKS=1 $P teacher doom-cpu 32 30
$P teacher doom-small 32 20
$P memory doom-cpu 16 20
