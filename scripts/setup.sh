#!/usr/bin/env bash
# Set up a development environment in .venv (idempotent): autotune, its dependencies and the dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[dev]'
echo "autotune is installed in $VENV: run $VENV/bin/autotune --help"
