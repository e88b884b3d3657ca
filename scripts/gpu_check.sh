#!/usr/bin/env bash
# The speed checks of issue 13 on one GPU, in under 8 minutes:
#   1. scripts/check_transfers.py: ordinary steps under
#      jax.transfer_guard_device_to_host("disallow") (a real check on a GPU);
#   2. scripts/benchmark_algoperf.py on AlgoPerf's ogbg (batch 512) and wmt (batch 128),
#      real shapes (WMT sequences of 256 tokens), beside AlgoPerf's NAdamW baseline.
#
#   bash scripts/gpu_check.sh            # from the project root; prints, and tees to $OUT
#
# Needs a Python with jax (GPU) and algoperf importable (its ogbg and wmt workloads import
# tensorflow, tensorflow_datasets, torch and jraph). PYTHON selects it (default python3).
# When algoperf is not importable and ALGOPERF_SRC names an AlgoPerf work tree, that tree
# is put on PYTHONPATH; wheels in .whl/ (downloaded elsewhere with pip download) are
# installed offline into /tmp/site. Nothing else is fetched.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_check.log
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# TensorFlow (imported by the input pipelines, never run here) must not take the GPU.
export CUDA_MODULE_LOADING=LAZY XLA_PYTHON_CLIENT_PREALLOCATE=false

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PYTHON" -c "import algoperf" 2>/dev/null && [ -n "${ALGOPERF_SRC:-}" ]; then
  export PYTHONPATH=$ALGOPERF_SRC${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" || exit 1
  echo "== transfer check"
  timeout 120 "$PYTHON" -m scripts.check_transfers --steps 50 || echo "transfer check FAILED ($?)"
  echo "== benchmark: ogbg batch 512, wmt batch 128"
  timeout 330 "$PYTHON" -m scripts.benchmark_algoperf --workloads ogbg,wmt \
    --batch_sizes 512,128 --steps 10 --rounds 6 || echo "benchmark FAILED ($?)"
} 2>&1 | grep -v -e '^[WI]0000' -e 'computation placer' -e 'Unable to register' | tee "$LOG"
