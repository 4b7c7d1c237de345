""" "tuning for the CPU backend" is said where autotune tunes, never by a lookup (serve, its dry
run, profiles show)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.conftest import run_autotune

NOTE = "tuning for the CPU backend"


@pytest.fixture
def cpu_vllm(tmp_path: Path) -> str:
    """A CPU build of vLLM as ``--device auto`` sees it; launched, it exits at once."""
    exe = tmp_path / "bin" / "vllm"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\necho 0.33.0+cpu\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return f"{exe} serve"


@pytest.mark.parametrize(
    "command",
    [["profiles", "show"], ["serve", "--dry-run", "--no-tune"], ["serve", "--no-tune"]],
)
def test_lookups_say_nothing_of_tuning(cpu_vllm: str, model_dir: Path, command: list[str]) -> None:
    done = run_autotune(*command, model_dir, "--vllm-cmd", cpu_vllm, timeout=60)
    assert "no profile" in done.stderr and "CPU backend" in done.stderr  # it did choose the CPU
    assert NOTE not in done.stderr


def test_tune_says_it_once(cpu_vllm: str, model_dir: Path) -> None:
    done = run_autotune("tune", model_dir, "--vllm-cmd", cpu_vllm, "--trials", "1", "--quiet",
                        "--no-soak", timeout=120)  # fmt: skip
    assert done.stderr.count(NOTE) == 1, done.stderr
