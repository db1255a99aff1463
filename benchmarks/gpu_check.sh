#!/usr/bin/env bash
# Run on a machine with an NVIDIA GPU: installs model-bundle with onnxruntime-gpu's
# CUDA/cuDNN libraries, then exports, loads on CPU and CUDA, compares and times.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh gpu
exec .venv/bin/python benchmarks/gpu_check.py
