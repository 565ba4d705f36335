#!/usr/bin/env bash
# The whole command given to a GPU machine that has PyTorch but no package index and no data:
# install the wheels carried in .gpu/whl (jupytext, nbclient, ipykernel, learn2learn, higher and their
# needs, built for its Python 3.12), unpack the carried Omniglot (.gpu/omniglot.tar.gz, the folder
# that METALEARN_DATA names here), then run benchmarks/gpu_session.py with the given options.
#
#   bash benchmarks/gpu_run.sh OUTDIR [gpu_session.py options...]
# e.g. the chapter timings of the results appendix:
#   bash benchmarks/gpu_run.sh "$OUT" --no-bench --no-training --grade-scales full,quick --chapters 8 --deadline 520
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu_run.sh OUTDIR [gpu_session.py options]}
shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site
mkdir -p /tmp/omniglot "$out"
tar xzf .gpu/omniglot.tar.gz -C /tmp/omniglot
export METALEARN_DATA=/tmp/omniglot
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.txt" || true
exec python3 benchmarks/gpu_session.py --out "$out" "$@"
