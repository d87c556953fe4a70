#!/usr/bin/env bash
# Train several agents on one env (or reuse the runs already there) and compare them in
# TensorBoard. Where the events are depends on how the runs were trained:
#   * by default each run folder keeps its own, in RUNS_DIR/ENV/<agent>/seed<S>/tensorboard,
#     so the logdir is RUNS_DIR/ENV;
#   * with --tensorboard-log DIR they are in DIR/ENV/<agent>/seed<S>, so the logdir is DIR/ENV.
# Give the same TB_LOG as the runs had (a run reused as it is keeps its events where they
# were first written); the script prints the logdir and how many runs have events there.
# Usage: examples/compare_in_tensorboard.sh [ENV] [SEEDS] [TB_LOG]
#   ENV     env id (default LinearBT-v0); SEEDS: seeds 0..SEEDS-1 (default 2)
#   TB_LOG  the runs' --tensorboard-log DIR (default: none, the zoo's default above)
# Environment: AGENTS (default "dpo rso iterative_dpo"), RUNS_DIR (runs),
# EXTRA (more rlhf-zoo train arguments, e.g. "--env-kwargs query_budget=256"; not
# --tensorboard-log: give that as TB_LOG).
set -euo pipefail
ENV_ID="${1:-LinearBT-v0}"
SEEDS="${2:-2}"
TB_LOG="${3:-}"
AGENTS="${AGENTS:-dpo rso iterative_dpo}"
RUNS_DIR="${RUNS_DIR:-runs}"
case " ${EXTRA:-} " in
  *" --tensorboard-log"*)
    echo "error: give the TensorBoard folder as the third argument (TB_LOG), not in EXTRA" >&2
    exit 2 ;;
esac
TB_ARGS=()
if [[ -n "$TB_LOG" ]]; then
  TB_ARGS=(--tensorboard-log "$TB_LOG")
  LOGDIR="$TB_LOG/$ENV_ID"
  WHERE="the --tensorboard-log folder $TB_LOG"
else
  LOGDIR="$RUNS_DIR/$ENV_ID"
  WHERE="each run folder's tensorboard/ under $RUNS_DIR (the zoo's default)"
fi
for agent in $AGENTS; do
  for ((seed = 0; seed < SEEDS; seed++)); do
    # --resume: a finished run is reused as it is, an interrupted one continues
    # shellcheck disable=SC2086
    python -m agents.zoo train --env "$ENV_ID" --agent "$agent" --seed "$seed" \
      --runs-dir "$RUNS_DIR" --resume ${TB_ARGS[@]+"${TB_ARGS[@]}"} ${EXTRA:-}
  done
done
# a run's events are in one folder: count the folders
RUNS=$(find "$LOGDIR" -name 'events.out.tfevents.*' 2>/dev/null | sed 's|/[^/]*$||' | sort -u |
  wc -l | tr -d ' ')
echo "logdir $LOGDIR, from $WHERE; runs with events there: $RUNS"
if [[ "$RUNS" -eq 0 ]]; then
  echo "warning: no event files there; if the runs were trained with --tensorboard-log DIR," \
    "run this again with DIR as the third argument" >&2
fi
echo "compare them: tensorboard --logdir $LOGDIR   (scalars train/, eval/, oracle/; HPARAMS tab)"
