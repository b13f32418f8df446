#!/usr/bin/env bash
# Every number of docs/PERFORMANCE.md, measured on this machine and written as JSON under docs/perf/, then rendered.
# Run from the project root after `make setup`, on an otherwise idle machine:  bash scripts/measure_performance.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
out=docs/perf
mkdir -p "$out"
perf() { python scripts/perf_report.py "$@"; }
# A small but real pipeline (Twitter-2017 subset, MiniLM, BLIP-2, 1 epoch) isolates the orchestration overhead.
small=(-o "data.max_examples={train: 256, dev: 128, test: 128}" -o train.epochs=1 -o tracking.experiment=perf)

shapca bench shapley > "$out/shapley.json"
shapca bench step --repeats 10 --output "$out/step.json"
perf time --name contexts-hit --label "shapca contexts, both Twitter sets x both generators, all cache hits" \
  --repeats 3 --warmup 1 --output "$out/contexts-hit.json" -- bash -c \
  'for d in twitter2015 twitter2017; do for g in blip2 mplug-owl; do shapca contexts --dataset $d --generator $g >/dev/null; done; done'
perf time --name contexts-flow-hit --label "generate-contexts Prefect flow (temporary server), both Twitter sets x both generators, all cache hits" \
  --repeats 3 --warmup 1 --baseline contexts-hit --output "$out/contexts-flow-hit.json" -- \
  python scripts/perf_report.py contexts-flow
perf time --name fit-direct --label "training function alone (small config)" --repeats 3 \
  --output "$out/fit-direct.json" -- python scripts/perf_report.py fit-direct "${small[@]}"
perf time --name train-mlflow --label "shapca train: + MLflow run, model log, registry (small config)" --repeats 3 \
  --baseline fit-direct --output "$out/train-mlflow.json" -- shapca train "${small[@]}"
perf time --name shapca-run-small --label "shapca run: + Prefect flow, validation, contexts (small config)" \
  --repeats 3 --baseline fit-direct --output "$out/shapca-run-small.json" -- shapca run "${small[@]}"
perf time --name shapca-run --label "shapca run, the README's main job (embedded default, 3 epochs)" --repeats 1 \
  --output "$out/shapca-run.json" -- shapca run
# The README's setup on a fresh clone (beside ../shared, as the README asks): venv, pinned packages, dvc pull. pip's
# download cache stays warm between repeats, as on any machine that installed once; a first install also downloads.
sandbox=$(mktemp -d)
perf time --name setup --label "make setup on a fresh clone: venv, pinned packages (pip cache warm), dvc pull" \
  --repeats 3 --output "$out/setup.json" \
  --before "rm -rf $sandbox/main && ln -sfn $(realpath ../shared) $sandbox/shared && git clone -q $PWD $sandbox/main" \
  -- make -C "$sandbox/main" setup
rm -rf "$sandbox"
perf render "$out" --output docs/PERFORMANCE.md
