#!/usr/bin/env bash
# The deployment path by hand, as tests/test_e2e_prefect.py runs it: a Prefect server on 127.0.0.1, the work pools,
# `prefect deploy --all`, a process worker on pool gpu, and one run of train-shapca/gpu on a tiny CPU config.
# Everything (Prefect database and results, MLflow store, checkpoints, context cache) goes to a temporary directory;
# the server and the worker are stopped by their pids when the script exits, however it exits.
#
#   scripts/e2e_demo.sh            # from the project root, after `make setup`
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
WORK="$(mktemp -d -t shapca-e2e-XXXXXX)"
PORT="${PORT:-4211}"

export PREFECT_HOME="$WORK/prefect-home"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///$PREFECT_HOME/prefect.db"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_UI_ENABLED=false PREFECT_CLI_PROMPT=false
export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$PREFECT_HOME"

PIDS=()
descendants() {  # every process below $1, by parent pid (a flow run sits in a session of its own)
  local child
  for child in $(pgrep -P "$1" || true); do echo "$child"; descendants "$child"; done
}
stop_all() {
  local family=()
  # Worker first (it would keep polling a server that is gone), then the server.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do family+=("${PIDS[i]}" $(descendants "${PIDS[i]}")); done
  kill -TERM "${family[@]}" 2>/dev/null || true
  sleep 5
  kill -KILL "${family[@]}" 2>/dev/null || true
  echo "logs and stores kept in $WORK"
}
trap stop_all EXIT

t0=$SECONDS
"$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
until curl -sf "$PREFECT_API_URL/health" >/dev/null; do sleep 0.5; done
echo "server healthy after $((SECONDS - t0)) s"

t0=$SECONDS
"$BIN/prefect" work-pool create gpu --type process >/dev/null
"$BIN/prefect" work-pool create cpu --type process >/dev/null
"$BIN/prefect" --no-prompt deploy --all
echo "pools + deploy --all: $((SECONDS - t0)) s"

"$BIN/prefect" worker start --pool gpu >"$WORK/worker.log" 2>&1 &
PIDS+=($!)

t0=$SECONDS
"$BIN/prefect" deployment run train-shapca/gpu --watch --watch-timeout 600 --params "$(cat <<EOF
{"overrides": ["train.device=cpu", "train.precision=fp32", "train.epochs=1", "train.batch_size=16",
               "data.max_examples={train: 48, dev: 24, test: 24}", "model.permutations=8",
               "train.output_dir=$WORK/outputs"],
 "contexts": {"backend": "precomputed", "generator": "blip2", "cache_dir": "$WORK/contexts"}}
EOF
)"
echo "deployment run: $((SECONDS - t0)) s"
"$BIN/python" - <<'EOF'
from mlflow import MlflowClient
client = MlflowClient()
champion = client.get_model_version_by_alias("shapca-twitter2017", "champion")
run = client.get_run(champion.run_id)
print(f"champion: shapca-twitter2017 v{champion.version} from run {champion.run_id}, "
      f"test_f1={run.data.metrics['test_f1']:.4f}")
EOF
