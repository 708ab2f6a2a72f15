#!/usr/bin/env bash
# The book on one CUDA machine, as one command (see benchmarks/gpu.py for what it checks):
#   benchmarks/gpu.sh [OUT]        default OUT: _build/gpu
# 1. a Python whose torch sees CUDA: $PYTHON, else .venv's, else python3; with network access and
#    ICLBOOK_GPU_INSTALL=1 it installs torch (PyPI's default build is a CUDA one) when none sees a GPU;
# 2. each chapter at the smoke profile on the GPU and on the CPU, and their parity, row by row;
# 3. each chapter at the paper profile on the GPU while 8 minutes last;
# 4. a table for benchmarks/README.md (also OUT/table.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-_build/gpu}"
sees_cuda() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
PY=""
for candidate in "${PYTHON:-}" .venv/bin/python python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null && sees_cuda "$candidate"; then PY="$candidate"; break; fi
done
if [ -z "$PY" ]; then
  if [ "${ICLBOOK_GPU_INSTALL:-0}" = "1" ]; then
    python3 -m pip install -q --upgrade torch && python3 -m pip install -q -e lib && PY=python3
    sees_cuda "$PY" || { echo "torch installed but sees no GPU: is this a CUDA machine?" >&2; exit 2; }
  else
    echo "no Python here has a torch that sees CUDA (set PYTHON, or ICLBOOK_GPU_INSTALL=1 to install one)" >&2
    exit 2
  fi
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
export PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu.py all --out "$OUT"
