#!/usr/bin/env bash
# Training-free baseline (pixel nearest neighbour) on real Omniglot, both splits and Lake's runs.
# Each run's last line (one JSON object) is kept in benchmarks/results/cpu/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/cpu
mkdir -p "$OUT"
for split in lake vinyals; do
  $PY -m metalearn_lib evaluate pixel-nn --split "$split" --eval 5w1s,5w5s,20w1s,20w5s --test-episodes 600 --quiet \
    | tail -n 1 > "$OUT/pixel-nn-$split.json"
done
$PY -m metalearn_lib evaluate pixel-nn --protocol lake-runs --quiet | tail -n 1 > "$OUT/pixel-nn-lake-runs.json"
cat "$OUT"/pixel-nn-*.json
