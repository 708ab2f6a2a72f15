#!/usr/bin/env bash
# `make colab`: run every chapter the way a reader's Colab session does.
#   1. build the library's wheel from lib/ (what the release tag's install line would build);
#   2. make a bare virtual environment with only what Colab ships, at today's versions: torch,
#      numpy, scipy, matplotlib, seaborn, scikit-learn, tqdm, ipykernel, transformers (no iclbook, no
#      jupyter-book, jupytext or nbval). torch is pinned to 2.13.0 only because that CPU wheel is
#      on this machine's disk; an unpinned torch would pull a multi-GB CUDA build;
#   3. execute every paired notebook at the smoke profile under nbval, in a kernel of that
#      environment, with ICLBOOK_INSTALL pointing each chapter's own install cell at the wheel:
#      the cell's logic runs, and the library and its declared dependencies must be enough.
# nbval itself runs from the book's environment (.venv) and only drives the kernel.
#
# `colab.sh setup` does steps 1-2 only and `colab.sh run` step 3 only, so that make test can build
# this environment while the book's own installs (it needs nothing of .venv); plain `colab.sh` does
# all three.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="$PWD/_build/colab"
PY="${PYTHON:-python3}"
PHASE="all"
if [[ "${1:-}" == "setup" || "${1:-}" == "run" ]]; then PHASE="$1"; shift; fi
if [[ "$PHASE" != "run" ]]; then
  rm -rf "$OUT"
  mkdir -p "$OUT"
  "$PY" -m venv "$OUT/venv"
  "$OUT/venv/bin/python" -m pip install -q --upgrade pip
  # the wheel is built by this environment's pip (in an isolated build environment, so nothing of
  # the build lands here), so that the set-up needs nothing of the book's .venv and can run beside
  # its installation (make test)
  "$OUT/venv/bin/python" -m pip wheel -q --no-deps -w "$OUT/wheel" ./lib
  "$OUT/venv/bin/python" -m pip install -q torch==2.13.0 numpy scipy matplotlib seaborn scikit-learn tqdm ipykernel transformers
  for absent in iclbook jupyter_book jupytext nbval; do
    if "$OUT/venv/bin/python" -c "import $absent" 2>/dev/null; then
      echo "the Colab-like environment must not have $absent" >&2; exit 1
    fi
  done
  "$OUT/venv/bin/python" -m pip list --format=freeze > "$OUT/versions.txt"
  "$OUT/venv/bin/python" -m ipykernel install --prefix "$OUT/kernel" --name iclbook-colab >/dev/null
  touch "$OUT/.ready"
fi
if [[ "$PHASE" == "setup" ]]; then exit 0; fi
if [[ ! -f "$OUT/.ready" ]]; then
  echo "no Colab-like environment in $OUT: run .ci/colab.sh setup first" >&2; exit 1
fi
WHEEL="$(ls "$OUT"/wheel/iclbook-*.whl)"
# JOBS notebooks at a time (xdist; --dist loadscope keeps each notebook's cells on one worker),
# each kernel with THREADS intra-op threads, as the book build runs them (.ci/execute.py)
JOBS="${JOBS:-2}"
THREADS="${THREADS:-1}"
JUPYTER_PATH="$OUT/kernel/share/jupyter" ICLBOOK_INSTALL="$WHEEL" \
  OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" \
  .venv/bin/python -m pytest book --nbval-lax --nbval-kernel-name iclbook-colab -p no:cacheprovider \
  -n "$JOBS" --dist loadscope "$@"
# the cell really installed the wheel (not the book's editable copy)
"$OUT/venv/bin/python" -c "import iclbook, sys; p = iclbook.__file__; print('iclbook from', p); sys.exit('.venv' in p or '/lib/iclbook' in p)"
