#!/usr/bin/env bash
# Train several agents on one env (or reuse the runs already there) and compare them in
# TensorBoard: every run folder keeps its own events in <run>/tensorboard, so pointing
# TensorBoard at the env's runs always shows every run, new or old.
# Usage: examples/compare_in_tensorboard.sh [ENV] [SEEDS]
# Environment: AGENTS (default "dpo rso iterative_dpo"), RUNS_DIR (runs),
# EXTRA (more rlhf-zoo train arguments, e.g. "--env-kwargs query_budget=256").
set -euo pipefail
ENV_ID="${1:-LinearBT-v0}"
SEEDS="${2:-2}"
AGENTS="${AGENTS:-dpo rso iterative_dpo}"
RUNS_DIR="${RUNS_DIR:-runs}"
for agent in $AGENTS; do
  for ((seed = 0; seed < SEEDS; seed++)); do
    # --resume: a finished run is reused as it is, an interrupted one continues
    # shellcheck disable=SC2086
    python -m agents.zoo train --env "$ENV_ID" --agent "$agent" --seed "$seed" \
      --runs-dir "$RUNS_DIR" --resume ${EXTRA:-}
  done
done
echo "compare them: tensorboard --logdir $RUNS_DIR/$ENV_ID   (scalars train/, eval/, oracle/; HPARAMS tab)"
