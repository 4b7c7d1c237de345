#!/usr/bin/env bash
# The project's test command: lint, type-check and test. Run scripts/setup.sh once first.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"
"$VENV/bin/lint-imports"
"$VENV/bin/hadolint" docker/Dockerfile
"$VENV/bin/pytest" -q "$@"
