#!/usr/bin/env bash
# One command for the demo: builds .venv if needed, then runs `lavt demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/lavt demo "$@"
