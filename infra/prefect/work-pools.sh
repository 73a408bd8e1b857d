#!/usr/bin/env bash
# The work pools infra/prefect.yaml's deployments run in, on the server PREFECT_API_URL names.
#   VLAFORGE_POOL_TYPE  the worker type (default: process; e.g. kubernetes or docker where those workers run)
#   VLAFORGE_GPU_RUNS   flow runs at once in the GPU pool (default 2: the model stages share the GPU workers)
#   PREFECT             the prefect command (default: prefect on the PATH)
set -euo pipefail
read -r -a prefect <<< "${PREFECT:-prefect}"
type="${VLAFORGE_POOL_TYPE:-process}"
for pool in vlaforge-cpu vlaforge-gpu; do
  "${prefect[@]}" --no-prompt work-pool create "$pool" --type "$type" --overwrite
done
"${prefect[@]}" --no-prompt work-pool set-concurrency-limit vlaforge-gpu "${VLAFORGE_GPU_RUNS:-2}"
