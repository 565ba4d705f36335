#!/usr/bin/env bash
# Optimization-based meta-learning on a 2-core CPU: the MAML bench against learn2learn and higher,
# MAML's sinusoid regression (120 s, three seeds), and MAML on Omniglot 5-way 1-shot (Lake's split, 240 s).
# Writes the last JSON line of every command to benchmarks/results/cpu/<name>.json and the load
# average before/after each run to benchmarks/results/cpu/load.txt.
#
#   METALEARN_DATA=/path/to/omniglot bash benchmarks/cpu_optimization.sh
#   ONLY="sinusoid maml" bash benchmarks/cpu_optimization.sh      (a subset of: bench bench2 sinusoid maml)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results/cpu
RUNS=${RUNS_DIR:-/tmp/metalearn_cpu_optimization}
# One run at a time on a quiet machine, using both cores (1.35x the steps of one thread for MAML's
# meta-batches of 2; the sinusoid's tiny matrices gain little: 4.9 against 5.3 ms per step).
# On a shared machine set OMP_NUM_THREADS=1: oversubscribed threads are 3x slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT" "$RUNS"
ONLY=${ONLY:-bench bench2 sinusoid maml}
RUN_FLAGS=()
# shellcheck source=benchmarks/_common.sh
source benchmarks/_common.sh

# Throughput of one meta-training step, ours (both meta-batch paths) against learn2learn and higher:
# meta-batches of 4 on a CPU (--quick), a warm-up step each, then 20 rounds in which the implementations
# take turns, one step each; each reports its median step. (Blocks of three, then ten, steps per
# implementation let the machine's drift move the ratios to learn2learn by up to 20%.)
# One thread: the bench compares implementations, not machines.
want bench && OMP_NUM_THREADS=1 run bench_maml bench maml --device cpu --quick --paths --steps 20
# Both cores for every implementation: ours runs the meta-batch's tasks side by side, one thread each
# (MAML's task_threads; metalearn_lib-serial is our loop with torch's threads inside each operation, as
# learn2learn and higher use them).
want bench2 && OMP_NUM_THREADS=2 run bench_maml_2threads bench maml --device cpu --quick --paths --steps 20

# MAML's sinusoid regression with the class's sinusoid defaults (the paper's tasks, network, α and
# inner step, with Adam 3e-3 and a cosine decay for a short budget, meta-batches of 50 tasks run as
# batched matrix products, and the input x scaled from [-5, 5] to [-1, 1]), then the same with the
# paper's unscaled input (input_scale=1). Three seeds each, each scored on 19,800 new tasks (a few
# seconds: all tasks adapt in one batch), which the results table cuts into 33 test sets of the
# paper's 600: rare tasks whose ten steps diverge decide a 600-task mean, so one set of 600 says little.
if want sinusoid; then
  for seed in 0 1 2; do
    name=maml_sinusoid; [[ $seed == 0 ]] || name=maml_sinusoid_seed$seed
    run "$name" train maml --dataset sinusoid --time-budget 120 --device cpu --quiet --seed "$seed" --test-episodes 19800 \
        --out "$RUNS/$name"
  done
  for seed in 0 1 2; do
    name=maml_sinusoid_unscaled_seed$seed
    run "$name" train maml --dataset sinusoid --time-budget 120 --device cpu --quiet --seed "$seed" --test-episodes 19800 \
        --set input_scale=1 --out "$RUNS/$name"
  done
fi

# MAML on Omniglot 5-way 1-shot: the paper's α = 0.4, one inner step (three at test) and rotations, with
# meta-batches of 2 tasks and 5 query images per class, which learn more per second on a CPU than
# the paper's 32 tasks with one query each (benchmarks/cpu_sweep.sh: 92.3 against 90.6 with meta-batches
# of 4 in a sweep at equal time).
want maml && run maml train maml --split lake --time-budget 240 --meta-batch 2 --queries 5 --test-episodes 600 \
    --device cpu --quiet --out "$RUNS/maml"
true  # a part left out by ONLY is not a failure
