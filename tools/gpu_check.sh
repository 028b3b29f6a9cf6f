#!/usr/bin/env bash
# The GPU check (tools/gpu_check.py): kernels on CUDA, an AMP training step
# of every backbone x mode, and the speed ratios. Needs an NVIDIA GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-${MMCEFORMER_PYTHON:-.venv/bin/python}}"
exec "$PYTHON" tools/gpu_check.py "$@"
