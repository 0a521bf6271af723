#!/usr/bin/env bash
# The paper profile on a GPU (issue 18): fold 0 of both stages on LiTS-sized phantoms under JAX,
# extrapolated to the 10-fold run (liverlib.bench.paper_fold). For a machine with JAX and no TensorFlow:
#   bash scripts/gpu_paper_fold.sh [OUT_DIR] [CASES] [EPOCHS]
# Missing pure-Python dependencies can come as wheels in .whl/ (installed to /tmp/site first).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-.}}
cases=${2:-12}
epochs=${3:-3}
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export KERAS_BACKEND=jax PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 LIVERLIB_CACHE=${LIVERLIB_CACHE:-/tmp/liverlib-cache}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
mkdir -p "$out"
python3 -m liverlib.bench.paper_fold --work /tmp/paper-fold --cases "$cases" --epochs "$epochs" \
    --out "$out/paper_fold.json" 2>&1 | tee "$out/paper_fold.log"
