"""Claims on a shared study, set once and atomically through its storage: which worker queues
vLLM's defaults first, and which one finishes (re-measures, soaks and saves the profile)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from typing import Any

import optuna
import psutil

from autotune.search.workers.coordination import WORKER_ID, counts
from autotune.trial.record import attrs

FINISH = "autotune:finish"  # study system attribute: the worker that soaks and saves
DEFAULTS = "autotune:defaults"  # ... the worker that queues vLLM's defaults first
DEFAULTS_QUEUED = "autotune:defaults-queued"
DEFAULTS_WAIT_S = 30.0
DONE = ":done"  # suffix: the claim's holder saw it through (never taken over once it exits)


def claim(study: optuna.Study, key: str) -> bool:
    """Set ``key`` to this worker once per study, atomically: an INSERT that the storage's
    unique (study, key) constraint lets only one worker make. A claim of a dead worker of this
    host is taken over, unless it was seen through (``done``): a worker that finished and
    exited is not a crashed one. Storages other than RDB (one process): always True."""
    backend = getattr(study._storage, "_backend", study._storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return True
    from optuna.storages._rdb import models
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    mine = json.dumps(WORKER_ID)
    session = backend.scoped_session()
    try:
        session.add(
            models.StudySystemAttributeModel(study_id=study._study_id, key=key, value_json=mine)
        )
        session.commit()
        return True
    except IntegrityError:
        session.rollback()
    finally:
        session.close()
    held = study._storage.get_study_system_attrs(study._study_id)
    holder = held.get(key)
    if holder == WORKER_ID:
        return True
    if held.get(key + DONE) is not None or not _dead_here(holder):
        return False  # a live holder's, or one whose holder saw it through and exited
    table = models.StudySystemAttributeModel
    session = backend.scoped_session()
    try:  # compare and swap: of two workers taking it over, one wins
        done = session.execute(
            update(table)
            .where(table.study_id == study._study_id)
            .where(table.key == key)
            .where(table.value_json == json.dumps(holder))
            .values(value_json=mine)
        )
        session.commit()
        return bool(getattr(done, "rowcount", 0))
    finally:
        session.close()


def _dead_here(holder: object) -> bool:
    host, _, pid = str(holder).rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))


def defaults_first(study: optuna.Study, params: Mapping[str, Any]) -> None:
    """vLLM's defaults are a new study's first trial, however many workers start it at once:
    the worker that claims the start queues them; the others wait until it has decided."""
    if claim(study, DEFAULTS):
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(dict(params), user_attrs=attrs(source="vllm-defaults"))
        study._storage.set_study_system_attr(study._study_id, DEFAULTS_QUEUED, True)
        return
    deadline = time.monotonic() + DEFAULTS_WAIT_S
    while time.monotonic() < deadline:
        if study._storage.get_study_system_attrs(study._study_id).get(DEFAULTS_QUEUED):
            return
        time.sleep(0.2)


def claim_finish(study: optuna.Study) -> bool:
    """One soak and one profile write per study: the worker that claims this round's finish
    (a round: the search's launches so far, so a study resumed with more trials is finished
    again). Re-measures do not start a round: a worker that ran nothing and arrives between
    the finisher's re-measures finds the round claimed."""
    return claim(study, _finish_key(study))


def _finish_key(study: optuna.Study) -> str:
    return f"{FINISH}:{counts(study).searched}"


def done(study: optuna.Study, key: str) -> None:
    """Mark this worker's claim on ``key`` seen through."""
    study._storage.set_study_system_attr(study._study_id, key + DONE, WORKER_ID)


def finish_done(study: optuna.Study) -> None:
    """This round's finish is seen through: the profile is saved."""
    done(study, _finish_key(study))
