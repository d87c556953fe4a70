#!/usr/bin/env bash
# Train several agents on one env and compare them in TensorBoard, one run per
# <env>/<agent>/seed<S>.  Usage: examples/compare_in_tensorboard.sh [ENV] [SEEDS]
# Environment: AGENTS (default "dpo rso iterative_dpo"), TB_DIR (tb), RUNS_DIR (runs),
# EXTRA (more rlhf-zoo train arguments, e.g. "--env-kwargs query_budget=256").
set -euo pipefail
ENV_ID="${1:-LinearBT-v0}"
SEEDS="${2:-2}"
AGENTS="${AGENTS:-dpo rso iterative_dpo}"
TB_DIR="${TB_DIR:-tb}"
RUNS_DIR="${RUNS_DIR:-runs}"
for agent in $AGENTS; do
  for ((seed = 0; seed < SEEDS; seed++)); do
    # shellcheck disable=SC2086
    python -m agents.zoo train --env "$ENV_ID" --agent "$agent" --seed "$seed" \
      --runs-dir "$RUNS_DIR" --tensorboard-log "$TB_DIR" --resume ${EXTRA:-}
  done
done
echo "compare them: tensorboard --logdir $TB_DIR   (scalars train/, eval/, oracle/)"
