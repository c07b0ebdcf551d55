#!/usr/bin/env bash
# The MQuAKE table of issue 3: no-edit, MeLLo and PokeMQA at k=1 and k=all, 120 dev cases, seed 0, per model.
# Each run checkpoints every finished case, so rerunning this script continues where it stopped; finished runs
# only re-summarise. Usage: benchmarks/mquake_suite.sh [model ...]   (default: both packaged models)
# Runs one after another with one thread each; start one suite per model to use two cores.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY="${PYTHON:-.venv/bin/python}"
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(smollm2-135m-instruct gemma3-270m)
for model in "${models[@]}"; do
  for spec in "no-edit all" "no-edit 1" "mello all" "pokemqa all" "mello 1" "pokemqa 1"; do
    set -- $spec
    echo "=== $(date -u +%FT%TZ) $model $1 k=$2"
    "$PY" benchmarks/mquake.py --model "$model" --method "$1" --k "$2" --cases 120 --seed 0 || echo "=== failed: $?"
  done
done
"$PY" benchmarks/mquake_report.py
