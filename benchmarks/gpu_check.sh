#!/usr/bin/env bash
# One-shot GPU check for a session that is lent a GPU (about 8 minutes on one H100/H200-class GPU):
#   1. a virtual environment on top of the machine's CUDA torch, with asd installed into it
#      (--no-deps: the machine's torch is kept; wheels for what it lacks can be carried in .whl/);
#   2. the tests marked `cuda` (device placement, bf16/fp16 autocast with GradScaler, resume on the
#      GPU, CPU-vs-GPU embeddings);
#   3. the speed benchmarks: train_speed.py (clips/s and GFLOP/s against the peak, fp32 and bf16)
#      and gpu_train.py (dis_spec_scac_trainable on a DCASE-2023-sized generated set: 14 machine
#      types x 1,000 clips of 10 s, a few epochs, extrapolated to the recipe's 16);
#   4. one table, also written to $OUT/gpu_check.md when $OUT is set.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere: checks the script and runs every step tiny on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUTDIR="${OUT:-$(mktemp -d)}"
LOG="$OUTDIR/gpu_check.log"
: > "$LOG"
step() { echo "== $*" | tee -a "$LOG"; }

step "environment"
if [ "$DRY" = 1 ]; then
    PY=python3                                   # the current environment, no install
    DEVICE=cpu
    TRAIN_ARGS=(--device cpu --machines 2 --clips 16 --seconds 1 --epochs 1 --set train.batch_size=8)
    SPEED_ARGS=(--device cpu --seconds 1 --batch 4 --steps 1 --models cnn)
    TESTS=(-m cuda tests/integration/test_cuda.py)   # skipped without a GPU: the collection is checked
else
    python3 -m venv --system-site-packages /tmp/asd-venv
    PY=/tmp/asd-venv/bin/python
    if ls .whl/*.whl >/dev/null 2>&1; then       # wheels carried for packages the image lacks (soundfile, cffi)
        "$PY" -m pip install -q --no-index --no-deps .whl/*.whl
    fi
    "$PY" -m pip install -q --no-deps --no-build-isolation -e .
    DEVICE=cuda
    TRAIN_ARGS=(--device cuda --epochs 3)
    SPEED_ARGS=(--device cuda --seconds 10 --batch 64 --steps 5 --models cnn,beats)
    TESTS=(-m cuda tests/integration/test_cuda.py)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"
fi
"$PY" -c "import torch, asd; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'asd', asd.__version__)" \
    | tee -a "$LOG"

step "tests marked cuda"
set +e
"$PY" -m pytest -q -rs "${TESTS[@]}" 2>&1 | tee "$OUTDIR/cuda_tests.log" | tail -15 | tee -a "$LOG"
TEST_RC=${PIPESTATUS[0]}
set -e

step "train_speed.py ($DEVICE)"
"$PY" benchmarks/train_speed.py "${SPEED_ARGS[@]}" 2>&1 | tee "$OUTDIR/train_speed.md" | tee -a "$LOG"

step "gpu_train.py ($DEVICE)"
"$PY" benchmarks/gpu_train.py "${TRAIN_ARGS[@]}" 2>&1 | grep -v "clip/s" | tee "$OUTDIR/gpu_train.md" | tee -a "$LOG"

step "summary"
{
    echo "| check | result |"
    echo "|---|---|"
    echo "| cuda tests | $(grep -E '[0-9]+ (passed|failed|skipped)' "$OUTDIR/cuda_tests.log" | tail -1) (exit $TEST_RC) |"
    grep -E '^\| (cnn|beats) \|' "$OUTDIR/train_speed.md" | sed 's/^| /| speed: /' || true
    grep -E '^\| (clips/s|GPU busy|peak GPU|16 epochs)' "$OUTDIR/gpu_train.md" | sed 's/^| /| recipe: /' || true
} | tee "$OUTDIR/gpu_check.md" | tee -a "$LOG"
[ "$DRY" = 1 ] || [ "$TEST_RC" = 0 ]
