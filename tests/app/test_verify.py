"""profiles verify: re-measure a saved profile against the fake engine and judge the drift."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from autotune.profiles.verify import Drift
from tests.conftest import FAKE_CMD, run_autotune

pytestmark = pytest.mark.timeout(120)

FAKE_ENV = {"AUTOTUNE_FAKE_STARTUP_S": "0.2", "AUTOTUNE_FAKE_TIME_SCALE": "0.05"}
HW = ["--gpu", "L4:24", "--vllm-cmd", FAKE_CMD]


def autotune(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_autotune(*args, env={**FAKE_ENV, **env}, timeout=100)


def test_drift_direction_and_gates() -> None:
    slower = Drift("output_throughput", 100.0, 80.0, higher_is_better=True, gated=True)
    assert slower.change == pytest.approx(-0.2) and slower.fails(0.1) and not slower.fails(0.25)
    faster = Drift("output_throughput", 100.0, 150.0, higher_is_better=True, gated=True)
    assert not faster.fails(0.1)
    later = Drift("ttft_ms_p95", 10.0, 30.0, higher_is_better=False, gated=False)
    assert later.worse_by == pytest.approx(2.0) and not later.fails(0.1)


@pytest.mark.slow
def test_verify_holds_then_catches_a_slower_engine_and_one_that_cannot_start(
    model_dir: Path,
) -> None:
    tuned = autotune(
        "tune", str(model_dir), *HW, "--trials", "2", "--max-model-len", "4096",
        "--input-len", "128", "--output-len", "16", "--num-prompts", "48", "--quiet",
    )  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr

    # Measured on a machine that may be loaded at random: a tolerance wide enough for that noise.
    same = autotune("profiles", "verify", str(model_dir), *HW, "--tolerance", "0.9")
    assert same.returncode == 0, same.stderr
    assert "holds within 90%" in same.stderr and "output_throughput" in same.stdout

    # The same profile on an engine a hundred times slower per step: throughput drops beyond the
    # floor a one-run profile is held to (two trials: no re-measure, its spread is unknown),
    # however loaded the machine was when the profile was measured; the line says what to do.
    slow = autotune("profiles", "verify", str(model_dir), *HW, AUTOTUNE_FAKE_TIME_SCALE="5")
    assert slow.returncode == 1, slow.stderr
    assert "throughput is held to 25%, not 10%" in slow.stderr
    assert "drift beyond 25%: output_throughput -" in slow.stderr
    assert "spread is unknown (one run)); re-tune on this machine" in slow.stderr
    assert "beyond tolerance (25%)" in slow.stdout

    # Another process now holds 20 of the 24 GiB: the profile cannot start here.
    crowded = autotune("profiles", "verify", str(model_dir), *HW, AUTOTUNE_FAKE_GPU_USED_GIB="20")
    assert crowded.returncode == 1
    assert "does not run here: insufficient_free_memory" in crowded.stderr
    logs = list(Path(os.environ["AUTOTUNE_STATE_DIR"], "logs", "verify").rglob("verify-1.log"))
    assert len(logs) == 3


def test_verify_without_a_profile_is_one_line(model_dir: Path) -> None:
    done = autotune("profiles", "verify", str(model_dir), *HW)
    assert done.returncode == 2 and "no profile for model llama-8b" in done.stderr
    assert "Traceback" not in done.stderr
