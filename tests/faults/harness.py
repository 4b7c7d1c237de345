"""Driving ``autotune tune`` against the fake engine as a user would, and injecting faults: the
tuner and engine pids come from the run itself (its Popen and its engine leases), never from a
scan by process name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import psutil

from tests.conftest import FAKE_CMD

FAST = {
    "AUTOTUNE_FAKE_STARTUP_S": "0.2",
    "AUTOTUNE_FAKE_TIME_SCALE": "0.2",
    "AUTOTUNE_HEARTBEAT_S": "1",
}
SLOW_BENCH = {**FAST, "AUTOTUNE_FAKE_TIME_SCALE": "3"}  # a benchmark of several seconds
ARGS = [
    "--vllm-cmd", FAKE_CMD, "--gpu", "L4:24", "--repeats", "1", "--no-soak", "--no-prune",
    "--max-num-seqs", "8:64", "--min-model-len", "2048", "--max-model-len", "4096",
    "--input-len", "128", "--output-len", "64", "--num-prompts", "48", "--quiet",
]  # fmt: skip


def command(model: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "autotune", "tune", str(model), *ARGS, *args]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a terminal's Ctrl-C would find it


def start(model: Path, *args: str, env: Mapping[str, str], err: Path) -> subprocess.Popen[str]:
    """``autotune tune`` in the background, stderr to ``err``."""
    with err.open("w") as sink:  # the child keeps its own copy
        return subprocess.Popen(
            command(model, *args),
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=sink,
            text=True,
            preexec_fn=_default_sigint,
        )


def run(model: Path, *args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(model, *args),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )


def wait_for(what: str, check: Callable[[], Any], *, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def leases(state: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((state / "leases").glob("engine-*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # being written
    return out


def benchmarking(state: Path) -> dict[str, Any] | None:
    """The lease of an engine whose benchmark has begun (the tuner reads ``/metrics`` just
    before it sends the first request); a moment later it is mid-benchmark."""
    for lease in leases(state):
        logs = sorted((state / "logs").glob("*/trial-*.log"), key=lambda p: p.stat().st_mtime)
        if logs and "GET /metrics" in logs[-1].read_text(errors="replace"):
            time.sleep(0.5)
            return lease
    return None


def alive(pid: int, started: float) -> bool:
    """The very process recorded (same pid and start time) still runs."""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - started) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def study(state: Path) -> optuna.Study:
    storage = f"sqlite:///{state / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def launched(state: Path) -> list[optuna.trial.FrozenTrial]:
    """Trials whose engine started (given-back and skipped candidates are not)."""
    return [
        t
        for t in study(state).get_trials()
        if t.user_attrs.get("launched") and t.user_attrs.get("outcome") != "over_budget"
    ]
