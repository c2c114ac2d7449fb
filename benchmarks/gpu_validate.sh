#!/usr/bin/env bash
# One-shot GPU validation on the lent NVIDIA machine (torch 2.11, triton 3.6, no network): the
# whole test suite on the GPU image's PyTorch (GPU tests included), then the demo with its
# defaults (auto) and with the Triton backend named. Logs go to $OUT (default ./gpu_out). No
# install needed: a source checkout on PYTHONPATH imports hipbmm_inductor.ops / .lowering.
# Wheels the image lacks (torchao, for its GPU test) are installed from .whl/ when present:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl torchao==0.18.0
# Usage: bash benchmarks/gpu_validate.sh [tests|demo|all]   (default all)
set -u
OUT="${OUT:-$PWD/gpu_out}"
WHAT="${1:-all}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HIPBMM_TUNING_CACHE="$(mktemp -d)"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  python3 -m hipbmm_inductor info
} 2>&1 | tee "$OUT/info.txt"
if [ "$WHAT" = all ] || [ "$WHAT" = tests ]; then
  # A kernel that deadlocks hangs its test rather than failing it: with pytest-timeout (the GPU
  # image has it) each test gets 120 s. The kernel tests compile a Gluon kernel per config and
  # M, so they run on 8 workers where pytest-xdist is present; the rest run alone, since their
  # timing tests compare two paths on one GPU and other workers' launches would skew them.
  TO=""; python3 -c "import pytest_timeout" 2>/dev/null && TO="--timeout 120"
  PAR=""; python3 -c "import xdist" 2>/dev/null && PAR="-n 8"
  timeout 300 python3 -m pytest tests/ops -q -p no:cacheprovider -rf $TO $PAR 2>&1 | tee "$OUT/pytest_ops.txt" | tail -20
  timeout 420 python3 -m pytest tests -q -p no:cacheprovider -rf --durations=10 --ignore=tests/ops $TO 2>&1 | tee "$OUT/pytest.txt" | tail -40
fi
if [ "$WHAT" = all ] || [ "$WHAT" = demo ]; then
  echo "--- demo (defaults: auto, Llama-3-8B MLP at 16 tokens)" | tee "$OUT/demo.txt"
  timeout 150 python3 -m hipbmm_inductor demo 2>&1 | tee -a "$OUT/demo.txt"
  echo "--- demo (HIPBMM_BACKEND=triton: every eligible linear rewritten)" | tee -a "$OUT/demo.txt"
  HIPBMM_BACKEND=triton timeout 150 python3 -m hipbmm_inductor demo 2>&1 | tee -a "$OUT/demo.txt"
fi
