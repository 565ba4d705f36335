#!/usr/bin/env bash
# The recipe sweep behind the CPU defaults of ProtoNet, Matching Networks and MAML (session 3).
# Two runs at a time, one thread each, on the 2-core machine: a run here gets less of the CPU than a
# run alone, so compare these figures with each other, not with the 240 s results of cpu_metric.sh.
# Lake's split, 300 test episodes per setting. Writes benchmarks/sweeps/cpu/NAME.json (outside results/: not in the README table).
#
#   METALEARN_DATA=/path/to/omniglot bash benchmarks/cpu_sweep.sh
#   SWEEP="p_paper240" bash benchmarks/cpu_sweep.sh     (only the pairs whose first run is named here)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/sweeps/cpu
export OMP_NUM_THREADS=1
mkdir -p "$OUT"

run() {  # run NAME ARGS...
  local name=$1; shift
  local test=(--split lake --eval 5w1s,20w1s --test-episodes 300)
  [[ $1 == maml ]] && test[3]=5w1s                           # a 5-way head
  [[ " $* " == *" --dataset sinusoid "* ]] && test=()        # regression: its own test (--test-episodes tasks)
  "$PY" -m metalearn_lib train "$@" --quiet --device cpu "${test[@]}" | tail -n 1 > "$OUT/$name.json"
}

pair() {  # pair "NAME ARGS" "NAME ARGS": two runs side by side
  [[ -z ${SWEEP:-} || " $SWEEP " == *" ${1%% *} "* ]] || return 0
  run $1 & local a=$!
  run $2 & local b=$!
  wait $a $b
}

# ProtoNet: 20-way 1-shot with 5 queries (the old default) at lr 2e-3 and 5e-3, then 30-way 3-query
# episodes, all for 1,400 episodes; then small episodes (1 query) for a fixed time.
pair "p_base protonet --episodes 1400 --lr 2e-3 --queries 5" "p_lr5 protonet --episodes 1400 --lr 5e-3 --queries 5"
pair "p_30w3q protonet --episodes 1400 --lr 2e-3 --train-ways 30 --queries 3" \
     "p_q1 protonet --time-budget 370 --lr 5e-3 --queries 1"
pair "p_30w1q protonet --time-budget 370 --lr 5e-3 --train-ways 30 --queries 1" \
     "p_q1lr10 protonet --time-budget 370 --lr 1e-2 --queries 1"
pair "p_norot protonet --time-budget 370 --lr 5e-3 --queries 1 --no-rotations" \
     "mn_q1 matching --time-budget 370 --lr 5e-3 --queries 1"
# Matching Networks: the same small episodes, with a sharper softmax or a larger learning rate.
pair "mn_s20 matching --time-budget 370 --lr 5e-3 --queries 1 --set scale=20" \
     "mn_lr10 matching --time-budget 370 --lr 1e-2 --queries 1"
# MAML 5-way 1-shot (second order): meta-batch 4 with 5 queries per class, Adam 1e-3 (the paper's) or
# 3e-3 with a cosine; meta-batch 2; 2 queries.
pair "m_base maml --time-budget 370 --meta-batch 4 --queries 5" \
     "m_lr3 maml --time-budget 370 --meta-batch 4 --queries 5 --lr 3e-3 --schedule cosine"
pair "m_mb2 maml --time-budget 370 --meta-batch 2 --queries 5" "m_q2 maml --time-budget 370 --meta-batch 4 --queries 2"
# MAML's sinusoid regression (sinusoid_defaults, batched MLP path), 120 s: meta-batches of 25 (the paper's) and 50.
pair "s_mb25 maml --dataset sinusoid --time-budget 120" "s_mb50 maml --dataset sinusoid --time-budget 120 --meta-batch 50"
# The same defaults (meta-batch 50) with two other seeds: how much one 120 s run varies.
pair "s_mb50_seed1 maml --dataset sinusoid --time-budget 120 --seed 1" "s_mb50_seed2 maml --dataset sinusoid --time-budget 120 --seed 2"
# Session 4. ProtoNet's episodes used in both directions (symmetric=true, the new default) against the
# paper's loss, 240 s each, the default recipe otherwise.
pair "p_paper240 protonet --time-budget 240 --set symmetric=false" "p_sym240 protonet --time-budget 240"
# Session 6. The sinusoid with 10 query points per task (the paper's and the default) against 20, three
# seeds, each scored on 19,800 tasks: 33 test sets of 600, to see how often a set meets the targets.
for seed in 0 1 2; do
  pair "s_q10_seed$seed maml --dataset sinusoid --time-budget 120 --queries 10 --seed $seed --test-episodes 19800" \
       "s_q20_seed$seed maml --dataset sinusoid --time-budget 120 --queries 20 --seed $seed --test-episodes 19800"
done
