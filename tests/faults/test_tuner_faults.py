"""Faults of the tuner mid-benchmark: SIGINT and SIGTERM unwind (exit 130, resumable);
SIGKILL leaves its engine to the watchdog; SIGKILL of the tuner and its watchdog leaves the
engine to the next run, which stops it through its lease. No engine is left, no finished trial
is lost or repeated, and ``--trials`` is never exceeded across the interruption and the rerun."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from tests.faults import harness as h

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
TRIALS = 2


def _finished(state: Path) -> list[int]:
    return [
        t.number
        for t in h.launched(state)
        if t.user_attrs.get("outcome") not in (None, "interrupted")
    ]


def _check_budget_and_no_repeats(state: Path) -> None:
    trials = h.launched(state)
    assert len(trials) == TRIALS  # every engine start counts; --trials is never exceeded
    done = [t for t in trials if t.number in _finished(state)]
    keys = [tuple(sorted(t.params.items())) for t in done]
    assert len(keys) == len(set(keys))  # no finished candidate run twice


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_then_resume(model_dir: Path, tmp_path: Path, sig: int) -> None:
    state = Path(os.environ["AUTOTUNE_STATE_DIR"])
    err = tmp_path / "err"
    proc = h.start(model_dir, "--trials", str(TRIALS), env=h.SLOW_BENCH, err=err)
    lease = h.wait_for("a benchmark", lambda: h.benchmarking(state))
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 130, err.read_text()
    assert "Traceback" not in err.read_text()
    assert not h.alive(lease["pid"], lease["started"])
    assert h.leases(state) == []
    (first,) = h.launched(state)
    assert first.user_attrs["outcome"] == "interrupted"

    again = h.run(model_dir, "--trials", str(TRIALS), env=h.FAST)
    assert again.returncode == 0, again.stderr
    _check_budget_and_no_repeats(state)
    rerun = h.launched(state)[1]
    assert rerun.params == first.params  # the interrupted candidate ran first
    assert h.run(model_dir, "--trials", str(TRIALS), env=h.FAST).returncode == 0
    assert len(h.launched(state)) == TRIALS  # nothing left to do: no launch


def _watchdog_of(tuner: int, engine: int) -> psutil.Process:
    """The tuner's watchdog of ``engine``: its child whose last argument is the engine's pid."""
    return next(c for c in psutil.Process(tuner).children() if c.cmdline()[-1:] == [str(engine)])


@pytest.mark.parametrize("with_watchdog", [False, True])
def test_sigkill_of_the_tuner_leaves_no_engine(
    model_dir: Path, tmp_path: Path, with_watchdog: bool
) -> None:
    state = Path(os.environ["AUTOTUNE_STATE_DIR"])
    err = tmp_path / "err"
    proc = h.start(model_dir, "--trials", str(TRIALS), env=h.SLOW_BENCH, err=err)
    lease = h.wait_for("a benchmark", lambda: h.benchmarking(state))
    watchdog = _watchdog_of(proc.pid, lease["pid"])
    if with_watchdog:
        watchdog.kill()  # the tuner's child: a zombie until the tuner is gone
    proc.kill()
    proc.wait(timeout=10)
    engine = (lease["pid"], lease["started"])
    if with_watchdog:
        assert h.alive(*engine)  # nobody left to stop it ...
    else:
        h.wait_for("the watchdog", lambda: not h.alive(*engine), timeout=30)

    again = h.run(model_dir, "--trials", str(TRIALS), env=h.FAST)
    assert again.returncode == 0, again.stderr
    assert not h.alive(*engine)  # ... but the next run
    assert (f"stopped engine pid {lease['pid']}" in again.stderr) is with_watchdog
    assert h.leases(state) == []
    _check_budget_and_no_repeats(state)
