"""The pieces of the fault handling on their own: the classes of an external kill and a stall,
the lease's checks before it kills anything, and the atomic claims on a shared study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autotune.engine import lease
from autotune.engine.outcome import Outcome, classify_runtime, classify_startup
from autotune.load.stall import StallWatch
from autotune.memory import rules
from autotune.search.moves import edge
from autotune.search.workers import claims
from autotune.search.workers.storage import rdb_storage
from autotune.trial.record import attrs, remeasure_source

ACCESS = '(APIServer pid=1) INFO:     127.0.0.1:1 - "POST /v1/completions HTTP/1.1" 200 OK\n'


def test_an_external_kill_is_killed_never_a_memory_failure() -> None:
    sigkill = -int(signal.SIGKILL)
    runtime = classify_runtime(ACCESS, returncode=sigkill)
    assert runtime.outcome is Outcome.KILLED and "SIGKILL" in runtime.reason
    assert classify_startup("INFO loading\n", returncode=sigkill).outcome is Outcome.KILLED
    oom = ACCESS + "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\n"
    assert classify_runtime(oom, returncode=sigkill).outcome is Outcome.CRASH_UNDER_LOAD
    assert classify_runtime(ACCESS, returncode=1).outcome is Outcome.CRASH_UNDER_LOAD
    for cls in (Outcome.KILLED, Outcome.HUNG):  # taught to nothing that learns memory
        assert not cls.infeasible and not cls.is_oom
        assert cls not in (*rules._DOWN, *rules._UP)
        assert cls.value not in edge._ABOVE | edge._ANYWHERE


def test_stall_watch_limits() -> None:
    fixed = StallWatch(fixed_s=0.0, first_pulse_s=100.0)
    fixed.last -= 1.0
    assert (fixed.check() or "").startswith("stalled: no token for 1 s")
    auto = StallWatch(fixed_s=None, first_pulse_s=100.0)
    assert auto.limit_s() == 100.0 and auto.check() is None
    auto.pulse()
    auto.last -= 5.0
    auto.pulse()  # a 5 s silence measured: the limit is a multiple of it
    assert auto.limit_s() == pytest.approx(100.0, rel=0.01)


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)  # fmt: skip


def _write(directory: Path, name: str, **fields: object) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"engine-{name}.json").write_text(json.dumps(fields))


def test_reap_kills_only_what_was_recorded(tmp_path: Path) -> None:
    gone_tuner = _sleeper()
    gone_tuner_started = lease.start_time(gone_tuner.pid)
    gone_tuner.kill()
    gone_tuner.wait()
    orphan, recycled, guarded = _sleeper(), _sleeper(), _sleeper()
    base = {"port": 1, "gpus": None, "host": os.uname().nodename}
    dead = {"tuner_pid": gone_tuner.pid, "tuner_started": gone_tuner_started}
    me = {"tuner_pid": os.getpid(), "tuner_started": lease.start_time(os.getpid())}
    leases = tmp_path / "leases"
    _write(leases, "a", pid=orphan.pid, started=lease.start_time(orphan.pid), **base, **dead)
    _write(leases, "b", pid=recycled.pid, started=1.0, **base, **dead)  # not the same process
    _write(leases, "c", pid=guarded.pid, started=lease.start_time(guarded.pid), **base, **me)
    try:
        reaped = lease.reap(leases)
        assert [r.pid for r in reaped] == [orphan.pid]
        orphan.wait(timeout=15)  # (reaped by reap's own wait: no exit code left here)
        assert lease.start_time(orphan.pid) is None
        assert recycled.poll() is None and guarded.poll() is None
        assert sorted(p.name for p in leases.iterdir()) == ["engine-c.json"]
    finally:
        for proc in (orphan, recycled, guarded):
            proc.kill()
            proc.wait()


def test_a_claim_is_won_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = optuna.create_study(storage=rdb_storage(f"sqlite:///{tmp_path / 's.db'}"))
    assert claims.claim(study, "k")
    assert claims.claim(study, "k")  # the same worker again
    monkeypatch.setattr(claims, "WORKER_ID", "elsewhere:1")
    assert not claims.claim(study, "k")
    monkeypatch.setattr(claims, "WORKER_ID", f"{os.uname().nodename}:2")
    assert not claims.claim(study, "k")  # the holder ("...:pid" of this test) is alive


def test_a_remeasure_does_not_open_a_new_finish_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that ran nothing and arrives between the finisher's re-measures must not claim
    a finish of its own (two profiles from one study); more search launches start a round."""
    study = optuna.create_study(storage=rdb_storage(f"sqlite:///{tmp_path / 's.db'}"))

    def launch(source: str) -> None:
        trial = study.ask()
        for key, value in attrs(launched=True, source=source, outcome="ok").items():
            trial.set_user_attr(key, value)
        study.tell(trial, 1.0)

    for _ in range(4):
        launch("sampler")
    assert claims.claim_finish(study)
    launch(remeasure_source(3))
    monkeypatch.setattr(claims, "WORKER_ID", "elsewhere:1")
    assert not claims.claim_finish(study)  # the same round, held by the first worker
    launch("sampler")  # the study resumed with more trials
    assert claims.claim_finish(study)


def test_a_finish_seen_through_is_not_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in CI: a worker that ran nothing finished the study, saved the profile and exited;
    the worker that launched last then found the claim's holder gone, took it over as a dead
    worker's and saved a second profile. A claim seen through is never taken over; one whose
    holder died before seeing it through still is."""
    study = optuna.create_study(storage=rdb_storage(f"sqlite:///{tmp_path / 's.db'}"))
    host = os.uname().nodename
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid of this host that no longer runs
    monkeypatch.setattr(claims, "WORKER_ID", f"{host}:{gone.pid}")
    assert claims.claim_finish(study) and claims.claim(study, "other")
    claims.finish_done(study)
    monkeypatch.setattr(claims, "WORKER_ID", f"{host}:{os.getpid()}")
    assert not claims.claim_finish(study)  # seen through by a worker that has exited since
    assert claims.claim(study, "other")  # not seen through: a dead worker's, taken over
