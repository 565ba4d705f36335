#!/usr/bin/env bash
# Metric-based meta-learning at full scale on one GPU, as in the papers.
# ProtoNet and Matching Networks on the Vinyals split (1,200 train+val characters x 4 rotations,
# 423 x 4 test), 1,000 test episodes per setting; Siamese networks on Lake's split, scored on
# Lake's 20 official one-shot runs. Writes the last JSON line of each command to
# benchmarks/results/gpu/<name>.json.
#
#   METALEARN_DATA=/path/to/omniglot bash benchmarks/gpu_metric.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results/gpu
RUNS=${RUNS_DIR:-/tmp/metalearn_gpu_metric}
mkdir -p "$OUT" "$RUNS"
EVAL="--split vinyals --eval 5w1s,5w5s,20w1s,20w5s --test-episodes 1000 --device cuda --quiet"

run() {  # run NAME ARGS...: one command, its last line -> $OUT/NAME.json
  local name=$1; shift
  "$PY" -m metalearn_lib "$@" | tail -n 1 > "$OUT/$name.json"
  cat "$OUT/$name.json"
}

# Snell et al.: 60-way episodes with 5 queries per class, Adam 1e-3 halved every 2,000 episodes;
# 1-shot models trained with 1 shot, 5-shot models with 5 shots; the paper's one-way loss (symmetric=false).
PROTO="--train-ways 60 --queries 5 --lr 1e-3 --schedule step --step-size 2000 --gamma 0.5 --episodes 20000 --val-every 0
       --set symmetric=false"
run protonet_1shot train protonet $PROTO --train-shots 1 $EVAL --out "$RUNS/protonet_1shot"
run protonet_5shot train protonet $PROTO --train-shots 5 $EVAL --out "$RUNS/protonet_5shot"

# Vinyals et al.: Matching Networks, without and with full context embeddings (cosine attention scaled
# by 10, the class default; add --set scale=1 for the paper's plain cosine, which trains more slowly).
MATCH="--train-ways 20 --train-shots 1 --queries 5 --lr 1e-3 --schedule step --step-size 2000 --gamma 0.5 --episodes 20000 --val-every 0"
run matching train matching $MATCH $EVAL --out "$RUNS/matching"
run matching_fce train matching $MATCH --set fce=true --set steps=5 $EVAL --out "$RUNS/matching_fce"

# Koch et al.: the 105x105 convolutional Siamese network with weighted L1 + sigmoid head, and the
# contrastive Conv-4 variant; both scored on Lake's 20 one-shot runs.
SIAM="--split lake --protocol lake-runs --device cuda --quiet --train-ways 20 --train-shots 1 --queries 4"
run siamese_koch train siamese $SIAM --set variant=koch --image-size 105 --lr 1e-4 --schedule step \
    --step-size 10000 --gamma 0.5 --episodes 30000 --out "$RUNS/siamese_koch"
run siamese_contrastive train siamese $SIAM --set variant=contrastive --lr 1e-3 --schedule step \
    --step-size 2000 --gamma 0.5 --episodes 20000 --out "$RUNS/siamese_contrastive"
