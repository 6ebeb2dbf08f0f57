#!/usr/bin/env bash
# One-GPU check, at most ~8 minutes on one H100: the CUDA tests, then training-step speed at
# 256x256 with full widths and at the demo widths, in fp32, TF32 and fp16 (images/s, % of the
# card's own matmul/convolution peak measured in the same run, peak memory).
#
#   bash benchmarks/gpu_check.sh                 # from the repository root; PYTHON=... to choose
#
# Without CUDA it prints one line and exits 0. Otherwise it exits with pytest's status.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: CUDA is not available to $PYTHON (no GPU, or a CPU-only torch); nothing was measured."
    exit 0
fi
"$PYTHON" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")'
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || true

echo "== cuda tests"
timeout 240 "$PYTHON" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider -x
tests=$?

echo "== training step, 256x256, full widths (cbase 16384, cmax 512, map 8, batch 64)"
timeout 150 "$PYTHON" benchmarks/train_step.py --device=cuda --res=256 --channels=3 --batch=64 --cbase=16384 \
    --cmax=512 --map=8 --precision=fp32,tf32,fp16 --repeats=3 || echo "gpu_check: full-width benchmark failed ($?)"

echo "== training step, demo widths (64x64, cbase 2048, cmax 32, map 2, batch 8)"
timeout 60 "$PYTHON" benchmarks/train_step.py --device=cuda --res=64 --channels=1 --batch=8 --cbase=2048 \
    --cmax=32 --map=2 --precision=fp32,tf32,fp16 --repeats=5 --cfg=stylegan2,idgan \
    || echo "gpu_check: demo-width benchmark failed ($?)"

echo "gpu_check: cuda tests exit status $tests"
exit $tests
