"""Shared fixtures: isolated state/profile dirs, the fake engine command, ``autotune`` as a
subprocess."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the repository
CONFIGS = ROOT / "tests" / "data" / "configs"  # published config.json files of real models
FAKE_CMD = f"{shlex.quote(sys.executable)} -m autotune.testing.fake_engine serve"

LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}

LLAMA_70B: dict[str, object] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "max_position_embeddings": 131072,
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}
# An FP8 checkpoint of it: 67.7 GiB of weights (autotune.memory.estimates.weight_bytes).
LLAMA_70B_FP8: dict[str, object] = {**LLAMA_70B, "quantization_config": {"quant_method": "fp8"}}


def write_model(directory: Path, config: Mapping[str, object] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config or LLAMA_8B))
    return directory


def run_autotune(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float | None = 280,
) -> subprocess.CompletedProcess[str]:
    """``python -m autotune ARGS`` as a user runs it: a subprocess, its output captured as text.

    ``env``: variables set on top of the test's environment (``isolated_env``'s directories
    included), e.g. the fake engine's ``AUTOTUNE_FAKE_*`` settings. Never raises on a non-zero
    exit: tests assert on ``returncode``, ``stdout`` and ``stderr``.
    """
    return subprocess.run(
        [sys.executable, "-m", "autotune", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_model(tmp_path / "llama-8b")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real state, profiles or GPU settings."""
    monkeypatch.setenv("AUTOTUNE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AUTOTUNE_PROFILES_DIR", str(tmp_path / "profiles"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("AUTOTUNE_GPU", "AUTOTUNE_VLLM_CMD", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
