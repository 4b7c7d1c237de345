"""Opening study storage: on SQLite, worker processes that pop enqueued trials at the same
moment never get the same one (Optuna's ``FOR UPDATE`` does not lock there)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import optuna
import pytest

from autotune.search.workers.storage import rdb_storage

WAITING = 60
WORKERS = 4


def _pop_all(url: str, out: multiprocessing.Queue[list[int]]) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="race", storage=rdb_storage(url))
    popped: list[int] = []
    while True:
        trial_id = study._pop_waiting_trial_id()
        if trial_id is None:
            break
        popped.append(trial_id)
    out.put(popped)


@pytest.mark.slow
def test_enqueued_trials_are_claimed_once_by_racing_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(study_name="race", storage=rdb_storage(url))
    for x in range(WAITING):
        study.enqueue_trial({"x": x})
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[int]] = ctx.Queue()
    procs = [ctx.Process(target=_pop_all, args=(url, out)) for _ in range(WORKERS)]
    for proc in procs:
        proc.start()
    claims = [trial_id for _ in procs for trial_id in out.get(timeout=120)]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert sorted(claims) == sorted(t._trial_id for t in study.get_trials())
