"""The command line as a user meets it: one clear line for bad input, light imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.hardware import detect_nvml
from tests.conftest import FAKE_CMD, run_autotune


def one_clear_line(done: subprocess.CompletedProcess[str], needle: str) -> None:
    assert done.returncode != 0, done
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert needle in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["tune", "./no-such-model", "--gpu", "L4:24"], "does not exist"),
        (["tune", "{model}", "--gpu", "L4:24", "--trials", "0"], "--trials"),
        (["tune", "{model}", "--gpu", "L4:24", "--gpu-memory-utilization", "1.5"], "1.5"),
        (["tune", "{model}", "--gpu", "L4:24", "--max-num-seqs", "0:8"], "vLLM's limits"),
        (["tune", "{model}", "--gpu", "L4", "--vllm-cmd", FAKE_CMD], "GPU spec"),
        (["tune", "{model}", "--gpu", "L4:24", "--vllm-cmd", "no-such-vllm serve"], "not found"),
        (["tune", "{model}", "--gpu", "L4:24", "--max-model-len", "999999"], "model's maximum"),
        (["serve", "{model}", "--gpu", "L4:24", "--no-tune", "--vllm-cmd", FAKE_CMD], "no profile"),
        (["profiles", "show", "{model}", "--gpu", "L4:24"], "no profile"),
    ],
)
def test_bad_input_is_one_line(args: list[str], needle: str, model_dir: Path) -> None:
    args = [a.replace("{model}", str(model_dir)) for a in args]
    one_clear_line(run_autotune(*args, timeout=60), needle)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-num-seqs", "0:8"], "vLLM's limits"),
        (["--max-model-len", "999999"], "model's maximum"),
        (["--objective", "memory"], "--min-throughput"),
        (["--input-len", "9000", "--max-model-len", "4096"], "shorter than the workload"),
    ],
)
def test_input_is_checked_before_the_engine_command(
    args: list[str], needle: str, model_dir: Path
) -> None:
    """No vLLM needed to learn that the input is bad: an engine command that does not exist is
    only reported once every input is good."""
    common = ["tune", str(model_dir), "--gpu", "L4:24", "--vllm-cmd", "no-such-vllm serve"]
    one_clear_line(run_autotune(*common, *args, timeout=60), needle)
    one_clear_line(run_autotune(*common, timeout=60), "not found")


@pytest.mark.skipif(detect_nvml() is not None, reason="this machine has a GPU")
def test_no_gpu_and_no_flag(model_dir: Path) -> None:
    done = run_autotune("tune", str(model_dir), "--vllm-cmd", FAKE_CMD, timeout=60)
    one_clear_line(done, "no GPU found by NVML")


def test_help_and_dry_run_do_not_import_heavy_modules(tmp_path: Path, model_dir: Path) -> None:
    from autotune.profiles.store import SCHEMA_VERSION, Profile, ProfileStore

    ProfileStore(Path(os.environ["AUTOTUNE_PROFILES_DIR"])).save(
        Profile(
            schema_version=SCHEMA_VERSION,
            model={"id": str(model_dir), "name": "llama-8b"},
            hardware={"key": "l4-24gib-x1"},
            vllm_version="0.33.0",
            workload={"signature": "in512-out128"},
            objective="throughput",
            vllm_args={"gpu_memory_utilization": 0.9, "max_num_seqs": 256},
            extra_args=[],
            metrics={},
            startup={},
            provenance={"created": "2026-01-01T00:00:00+00:00"},
        )
    )
    probe = (
        "import sys, runpy\ncode = 0\n"
        "sys.argv = ['autotune'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('autotune', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in ('optuna', 'torch', 'vllm') if m in sys.modules]\n"
        "print('HEAVY', heavy, 'EXIT', code, file=sys.stderr)\n"
    )
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["plan", "--help"],
        ["plan", str(model_dir), "--gpu", "H100:80", "--json"],
        ["serve", str(model_dir), "--gpu", "L4:24", "--dry-run", "--vllm-cmd", FAKE_CMD],
    ):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60
        )
        assert "HEAVY [] EXIT 0" in done.stderr, (args, done.stderr)
    assert "--max-num-seqs 256" in done.stdout


@pytest.mark.slow
def test_engine_rejecting_user_args_stops_the_study_at_once(model_dir: Path) -> None:
    done = run_autotune(
        "tune", str(model_dir), "--gpu", "L4:24", "--vllm-cmd", FAKE_CMD, "--trials", "5",
        "--max-model-len", "8192", "--quiet", "--", "--no-such-vllm-flag",
        env={"AUTOTUNE_FAKE_STARTUP_S": "0.2"}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "engine rejected the settings" in last and "--no-such-vllm-flag" in last
    assert done.stderr.count("(1/5)") == 1 and "(2/5)" not in done.stderr


@pytest.mark.slow
def test_unresolvable_hub_model_stops_the_study(tmp_path: Path) -> None:
    env = {"AUTOTUNE_FAKE_STARTUP_S": "0.2", "PATH": os.path.dirname(sys.executable)}
    env["AUTOTUNE_HUB_CHECK"] = "0"  # as if the hub answered (no network here): vLLM's error
    done = run_autotune(
        "tune", "someorg/not-cached", "--gpu", "L4:24", "--vllm-cmd", FAKE_CMD, "--trials", "5",
        "--quiet", env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "not checked" in done.stderr  # what could not be checked is said up front
    last = done.stderr.strip().splitlines()[-1]
    assert "cannot find model someorg/not-cached" in last and "(2/5)" not in done.stderr
