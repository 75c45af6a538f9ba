# The tests marked `gpu` (tests/test_gpu.py: the cudagraph backend against the torch backend
# frame for frame, batching, the Wan-shape loop captured), on the device machine. Run it
# whenever GPU code changes. From the repository root, carrying .whl (the image has no pyzmq or
# ViZDoom, which test modules import):  bash scripts/gpu/test.sh
# Only the files that hold gpu tests are collected: the others import pygame, which the device
# machine lacks, and would fail to collect.
source scripts/gpu/common.sh
FILES=$(grep -l "pytest.mark.gpu" tests/test_*.py)
if [ -n "${DRY_RUN:-}" ]; then
  log "dry run: would run pytest -m gpu on" $FILES
  exit 0
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
# GPU_TESTS_K="expr" keeps only the tests pytest -k selects (a session that changed one area)
$PY -m pytest -q -m gpu -p no:cacheprovider ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} $FILES 2>&1 | tee "$OUT/gpu-tests.log"
