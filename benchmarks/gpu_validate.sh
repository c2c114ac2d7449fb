#!/usr/bin/env bash
# One-shot GPU validation (the lent H100: torch 2.11, triton 3.6, no network). Runs the whole
# test suite on the GPU image's PyTorch (GPU tests included), the demo with its defaults (the
# Triton backend on NVIDIA) and under HIPBMM_BACKEND=auto, and writes logs to $OUT (default
# ./gpu_out). No install needed: a source checkout on PYTHONPATH imports hipbmm_inductor.ops /
# .lowering (hipbmm_inductor/__init__.py).
set -u
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HIPBMM_TUNING_CACHE="$(mktemp -d)"
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  python3 -m hipbmm_inductor info
} 2>&1 | tee "$OUT/info.txt"
timeout 300 python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest.txt" | tail -40
echo "--- demo (defaults: triton on NVIDIA, Llama-3-8B MLP at 16 tokens)" | tee "$OUT/demo.txt"
timeout 120 python3 -m hipbmm_inductor demo 2>&1 | tee -a "$OUT/demo.txt"
echo "--- demo (HIPBMM_BACKEND=auto: no rewrite on NVIDIA, with its reasons)" | tee -a "$OUT/demo.txt"
HIPBMM_BACKEND=auto timeout 120 python3 -m hipbmm_inductor demo --tokens 64 --hidden 256 --intermediate 512 2>&1 | tee -a "$OUT/demo.txt"
