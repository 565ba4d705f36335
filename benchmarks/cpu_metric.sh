#!/usr/bin/env bash
# Metric-based meta-learning on a 2-core CPU: ProtoNet, Matching Networks, Siamese (contrastive Conv-4).
# Lake's split (background -> evaluation), 240 s of training each, 600 test episodes per setting;
# each trained model is then also scored on Lake's 20 official one-shot runs from its checkpoint.
# Writes the last JSON line of every command to benchmarks/results/cpu/<name>.json and the load
# average before/after each run to benchmarks/results/cpu/load.txt.
#
#   METALEARN_DATA=/path/to/omniglot bash benchmarks/cpu_metric.sh
#   ONLY="matching siamese" bash benchmarks/cpu_metric.sh      (a subset of the three methods)
#   ONLY=protonet SUFFIX=_rerun bash benchmarks/cpu_metric.sh  (a second run, kept beside the first as <name>_rerun)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results/cpu
RUNS=${RUNS_DIR:-/tmp/metalearn_cpu_metric}    # checkpoints (not kept in the repository)
# One run at a time on a quiet machine, using both cores (1.7x the steps of one thread for ProtoNet's
# 40-image episodes). On a shared machine set OMP_NUM_THREADS=1: oversubscribed threads are 3x slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT" "$RUNS"
ONLY=${ONLY:-protonet matching siamese}
S=${SUFFIX:-}
RUN_FLAGS=(--quiet --device cpu)
# shellcheck source=benchmarks/_common.sh
source benchmarks/_common.sh

# Prototypical Networks: 20-way 1-shot 1-query episodes on all 964 background characters x 4 rotations,
# Adam 5e-3 with a cosine schedule (the class defaults; benchmarks/cpu_sweep.sh compares recipes).
want protonet && run "protonet$S" train protonet --split lake --time-budget 240 --eval 5w1s,20w1s --test-episodes 600 \
    --out "$RUNS/protonet$S"
want protonet && run "protonet${S}_lake-runs" evaluate "$RUNS/protonet$S/last.pt" --protocol lake-runs

# Matching Networks (no FCE), cosine attention scaled by 20, the same episodes (the class defaults).
want matching && run "matching$S" train matching --split lake --time-budget 240 --eval 5w1s,20w1s --test-episodes 600 \
    --out "$RUNS/matching$S"
want matching && run "matching${S}_lake-runs" evaluate "$RUNS/matching$S/last.pt" --protocol lake-runs

# Siamese network, contrastive loss on the shared Conv-4 at 28x28 (Koch's 105x105 network is too slow
# for 240 s on a CPU), pairs from 20-way episodes of 1 + 4 images per class.
want siamese && run "siamese${S}_lake-runs" train siamese --split lake --time-budget 240 --protocol lake-runs \
    --set variant=contrastive --out "$RUNS/siamese$S"
want siamese && run "siamese$S" evaluate "$RUNS/siamese$S/last.pt" --eval 5w1s,20w1s --test-episodes 600
true  # a method left out by ONLY is not a failure
