#!/usr/bin/env bash
# Create (or reuse) the project virtualenv at .venv with everything the demo and tests need.
# torch/torchvision are pinned to the releases that install offline on the project machines;
# on your own machine any torch>=2.1 with a matching torchvision works (pip install -e '.[dev]').
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  .venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
.venv/bin/pip install -q -e '.[dev]'
