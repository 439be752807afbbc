#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): CuPy against NumPy, throughput and
# GPU memory, on a machine with a CUDA GPU, CuPy, NumPy and SciPy; at most
# 8 minutes. Wheels the check needs beyond those go in benchmarks/wheels/
# (none today) and are installed from there, offline.
#
#   usage: benchmarks/gpu_check.sh OUT_DIR     (writes OUT_DIR/gpu_check.json)
set -euo pipefail
out="${1:?usage: benchmarks/gpu_check.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if compgen -G "benchmarks/wheels/*.whl" >/dev/null; then
    "$python" -m pip install --quiet --no-index --find-links benchmarks/wheels benchmarks/wheels/*.whl
fi
"$python" -c "import cupy; print('cupy', cupy.__version__, 'devices:', cupy.cuda.runtime.getDeviceCount())"
timeout 480 "$python" benchmarks/gpu_check.py "$out" 2>&1 | tee "$out/gpu_check.txt"
