"""Faults of the engine mid-benchmark: stopped (SIGSTOP) → ``hung``, killed from outside
(SIGKILL) → ``killed``; neither is ``ok`` nor a memory failure, and no engine is left."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.faults import harness as h

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.mark.parametrize(
    ("sig", "expected", "why"),
    [
        (signal.SIGSTOP, "hung", "no token for"),
        (signal.SIGKILL, "killed", "killed by SIGKILL"),
    ],
)
def test_engine_fault_mid_benchmark_gets_its_own_class(
    model_dir: Path, tmp_path: Path, sig: int, expected: str, why: str
) -> None:
    state = Path(os.environ["AUTOTUNE_STATE_DIR"])
    proc = h.start(
        model_dir, "--trials", "2", "--stall-timeout", "2", env=h.SLOW_BENCH, err=tmp_path / "err"
    )
    lease = h.wait_for("a benchmark", lambda: h.benchmarking(state))
    os.kill(lease["pid"], sig)
    assert proc.wait(timeout=180) == 0, (tmp_path / "err").read_text()
    err = (tmp_path / "err").read_text()
    assert "Traceback" not in err

    trials = h.launched(state)
    assert len(trials) == 2  # --trials, the faulty launch included
    faulty, other = trials
    assert faulty.user_attrs["outcome"] == expected
    assert why in faulty.user_attrs["reason"]
    assert faulty.state == TrialState.FAIL  # not infeasible: the pre-screen learns nothing
    assert other.user_attrs["outcome"] == "ok"
    assert h.study(state).user_attrs["chosen_trial"] == other.number
    assert not h.alive(lease["pid"], lease["started"])  # no engine left, by its recorded pid
    assert h.leases(state) == []
