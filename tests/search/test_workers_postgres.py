"""Two worker processes on one study in a real PostgreSQL server, driving the fake engine: the
shared budget is spent exactly, nothing runs twice but a deliberate re-measure, and a worker
killed mid-trial has its trial failed by the storage heartbeat and re-run by the other, with no
engine left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from autotune.trial.record import REMEASURE
from tests.conftest import FAKE_CMD
from tests.postgres_server import bindir, postgres_server

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(240)]

BUDGET = 8
ARGS = [
    "--gpu", "L4:24", "--trials", str(BUDGET), "--repeats", "1", "--no-soak", "--no-prune",
    "--gpu-memory-utilization", "0.80:0.95", "--max-num-seqs", "8:128",
    "--min-model-len", "2048", "--input-len", "128", "--output-len", "16", "--num-prompts", "32",
    "--seed", "0", "--quiet", "--vllm-cmd", FAKE_CMD,
]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    if bindir() is None:
        pytest.skip("PostgreSQL binaries not installed (scripts/setup.sh installs Debian's)")
    with postgres_server() as url:
        yield url


@pytest.fixture
def storage(server: str, request: pytest.FixtureRequest) -> str:
    """A fresh database per test on the shared server."""
    import sqlalchemy

    name = "t_" + str(request.node.name).lower().replace("-", "_")[:40]
    url = server.replace("postgresql://", "postgresql+psycopg2://")
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server.rsplit("/", 1)[0] + "/" + name


def worker(model: Path, storage: str, tmp: Path, n: int, **env: str) -> subprocess.Popen[str]:
    environ = {
        **os.environ,
        "AUTOTUNE_FAKE_STARTUP_S": "0.6",
        "AUTOTUNE_FAKE_TIME_SCALE": "0.05",
        "AUTOTUNE_HEARTBEAT_S": "1",
        "AUTOTUNE_STATE_DIR": str(tmp / f"state{n}"),  # separate machines: nothing shared
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "autotune", "tune", str(model), "--storage", storage, *ARGS],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def study_of(storage: str) -> optuna.Study:
    url = storage.replace("postgresql://", "postgresql+psycopg2://")
    (summary,) = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def launched(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.user_attrs.get("launched")]


def assert_budget_spent_once(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    # A launch of a worker that died mid-trial (FAIL) is spent budget too: --trials counts
    # engine starts, and its configuration runs again as a retry.
    spent = [t for t in launched(study) if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    assert len(spent) == BUDGET, [(t.number, t.state, t.user_attrs.get("outcome")) for t in spent]
    done = [t for t in spent if t.state == TrialState.COMPLETE]
    # A configuration runs twice only as a deliberate re-measure (a finalist's repeat, or the
    # recheck of a run that contradicts the memory model), never as an accidental duplicate.
    again = [t for t in done if str(t.user_attrs.get("source", "")).startswith(REMEASURE)]
    first = [t for t in done if t not in again]
    keys = [tuple(sorted(t.user_attrs["vllm_args"].items())) for t in first]
    assert len(set(keys)) == len(keys), "a configuration was launched twice"
    for t in again:
        assert tuple(sorted(t.user_attrs["vllm_args"].items())) in keys, t.user_attrs
    sources = [t.user_attrs.get("source") for t in study.get_trials()]
    assert sources.count("vllm-defaults") == 1, sources
    assert not [
        t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)
    ]
    return done


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_two_workers_share_the_budget(model_dir: Path, storage: str, tmp_path: Path) -> None:
    procs = [worker(model_dir, storage, tmp_path, n) for n in range(2)]
    results = [finish(p) for p in procs]
    for code, err in results:
        assert code == 0, err
    study = study_of(storage)
    done = assert_budget_spent_once(study)
    assert len({t.user_attrs["worker"] for t in done}) == 2, "both workers launched trials"
    saved = [err for _, err in results if "profile saved to" in err]
    assert len(saved) == 1, [err[-600:] for _, err in results]
    assert "postgresql://autotune@" in saved[0] or "***" in saved[0] or "127.0.0.1" in saved[0]
    profiles = list(Path(os.environ["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml"))
    assert len(profiles) == 1
    assert study.user_attrs["fingerprint"]["gpu"] == "L4"


def engines_of(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return []
    return [c for c in children if "autotune.testing.fake_engine" in " ".join(_cmd(c))]


def _cmd(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def running_trial_of(study: optuna.Study, pid: int) -> Any:
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("launched") and str(t.user_attrs.get("worker", "")).endswith(f":{pid}"):
            return t
    return None


def test_killed_worker_trial_is_failed_and_rerun(
    model_dir: Path, storage: str, tmp_path: Path
) -> None:
    slow = {"AUTOTUNE_FAKE_STARTUP_S": "2.0"}
    survivor = worker(model_dir, storage, tmp_path, 0, **slow)
    victim = worker(model_dir, storage, tmp_path, 1, **slow)
    deadline = time.monotonic() + 90
    trial, engines = None, []
    while time.monotonic() < deadline:  # the victim mid-trial: its engine booting or serving
        time.sleep(0.2)
        engines = engines_of(victim)
        try:
            trial = running_trial_of(study_of(storage), victim.pid)
        except (ValueError, KeyError, optuna.exceptions.OptunaError):
            continue
        if trial is not None and engines:
            break
    assert trial is not None and engines, "the victim never ran a trial"
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    _, alive = psutil.wait_procs(engines, timeout=20)
    assert not alive, f"engines of the killed worker still running: {alive}"

    code, err = finish(survivor)
    assert code == 0, err
    assert "profile saved to" in err
    study = study_of(storage)
    dead = study.trials[trial.number]
    assert dead.state == TrialState.FAIL and "outcome" not in dead.user_attrs
    (retry,) = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == dead.number]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert retry.user_attrs["launched"] and retry.user_attrs["worker"] != dead.user_attrs["worker"]
    assert_budget_spent_once(study)
    leftovers = [
        p
        for p in psutil.process_iter()
        if "autotune.testing.fake_engine" in " ".join(_cmd(p)) and str(model_dir) in _cmd(p)
    ]
    assert not leftovers
