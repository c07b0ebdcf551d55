#!/usr/bin/env bash
# Issue 5's comparison: the same model, cases (150 dev cases, 50 per hop count), seed and edit batch for
# no-edit, MeLLo, PokeMQA, IKE, SERAC and the editagent method. Each run checkpoints per case; rerunning resumes.
# Usage: benchmarks/agent_comparison.sh [model] [k] [method ...]
#   default: smollm2-135m-instruct, k=all, methods no-edit mello pokemqa ike serac agent (SERAC with the trained
#   scope detector: `editagent scope train` once first)
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY="${PYTHON:-.venv/bin/python}"
model="${1:-smollm2-135m-instruct}"; k="${2:-all}"; shift 2 2>/dev/null || shift $#
methods=("$@")
[ ${#methods[@]} -eq 0 ] && methods=(no-edit mello pokemqa ike serac agent)
for method in "${methods[@]}"; do
  echo "=== $(date -u +%FT%TZ) $model $method k=$k"
  scope=(); [ "$method" = serac ] && scope=(--scope trained)
  "$PY" benchmarks/mquake.py --model "$model" --method "$method" --k "$k" --cases 150 --seed 0 "${scope[@]}" \
    || echo "=== failed: $?"
done
"$PY" benchmarks/mquake_report.py
"$PY" benchmarks/agent_comparison.py --model "$model" --k "$k" --cases 150
