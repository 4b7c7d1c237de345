"""Many workers on one study: heartbeat storage, identity and seed, the shared launch budget,
the hardware fingerprint, and which worker finishes the study.

Optuna is the distributed engine: RDB storage (SQLite on one node, PostgreSQL across nodes)
with heartbeats; a worker that dies has its running trial failed by the next worker's check
and re-run with the same parameters. Nothing here schedules: each worker asks Optuna.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from autotune.errors import UserError
from autotune.search import study_keys as keys
from autotune.trial.record import OVER_BUDGET, TrialRecord, attrs, store

ENV_HEARTBEAT = "AUTOTUNE_HEARTBEAT_S"  # seconds between heartbeats (grace: three of them)
ENV_WORKER_INDEX = "AUTOTUNE_WORKER_INDEX"  # set by `--gpus`; Kubernetes: JOB_COMPLETION_INDEX
DEFAULT_HEARTBEAT_S = 20
MAX_RETRIES = 2
# Given back before the engine started: not a launch. Every other launched trial counts against
# --trials, an interrupted one and one whose worker was killed included (they are re-run, but
# their engine started: --trials is never exceeded across interruptions and resumes).
NOT_COUNTED = frozenset({OVER_BUDGET, "gpu_busy"})
FINGERPRINT = ("gpu", "memory_gib", "count", "driver", "device")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def worker_index() -> int | None:
    raw = os.environ.get(ENV_WORKER_INDEX) or os.environ.get("JOB_COMPLETION_INDEX")
    return int(raw) if raw and raw.isdigit() else None


def worker_seed(seed: int | None, *, shared: bool) -> int | None:
    """Workers of one study must not propose the same candidates: each derives its own seed
    from ``--seed`` and its index (``--gpus``, an indexed Job) or, on a shared ``--storage``,
    its host and process. A lone worker on its own storage keeps ``--seed`` as given."""
    index = worker_index()
    if seed is None or (index is None and not shared):
        return seed
    tag = f"{index}" if index is not None else WORKER_ID
    return int(hashlib.sha256(f"{seed}:{tag}".encode()).hexdigest()[:8], 16)


def heartbeat_s() -> int:
    raw = os.environ.get(ENV_HEARTBEAT, "").strip()
    return max(1, int(float(raw))) if raw else DEFAULT_HEARTBEAT_S


def retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Heartbeat-stale (its worker died): queue the same parameters again, a few times."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRIES or not TrialRecord.of(trial).launched:
        return
    if any(
        t.system_attrs.get("retry_history") == history for t in study.get_trials(deepcopy=False)
    ):
        return  # another worker failed it at the same moment and queued the retry already
    _requeue(
        study,
        trial,
        source=f"retry of {trial.number} (its worker stopped)",
        system_attrs={"failed_trial": history[0], "retry_history": history},
    )


def _requeue(
    study: optuna.Study, trial: FrozenTrial, *, source: str, system_attrs: dict[str, Any]
) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=attrs(source=source),
            system_attrs=system_attrs,
        )
    )


def heartbeat_enabled(study: optuna.Study) -> bool:
    return is_heartbeat_enabled(study._storage)


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat now and every interval until the block ends."""
    storage = study._storage
    if not isinstance(storage, BaseHeartbeat) or not heartbeat_enabled(study):
        yield
        return
    interval = storage.get_heartbeat_interval() or DEFAULT_HEARTBEAT_S
    stop = threading.Event()
    storage.record_heartbeat(trial._trial_id)

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception:  # storage briefly unreachable: the next beat tries again
                continue

    thread = threading.Thread(target=beat, name="autotune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass(frozen=True)
class Counts:
    """The study's launch budget as every worker sees it."""

    done: int  # launches that ended: interrupted ones and those of a killed worker included
    running: int  # launched trials still running (reserved budget), this worker's included
    mine: int  # of them, this worker's
    searched: int = 0  # launches of the search, ended or running: re-measures not counted


def counts(study: optuna.Study, *, exclude: int | None = None) -> Counts:
    done = running = mine = searched = 0
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.of(t)
        if not record.launched or t.number == exclude or record.outcome in NOT_COUNTED:
            continue
        searched += not record.remeasure
        if t.state == TrialState.RUNNING and record.worker:
            running += 1  # held by a worker (a dead one's comes back failed by its heartbeat)
            mine += record.worker == WORKER_ID
        else:  # ended, or running since a killed run without heartbeats: its engine started
            done += 1
    return Counts(done=done, running=running, mine=mine, searched=searched)


def over_budget(study: optuna.Study, trial: optuna.Trial, *, budget: int) -> bool:
    """After ``ask`` and marking the trial launched: would it overshoot the shared budget?
    Without heartbeats (one process) nothing else runs."""
    if not heartbeat_enabled(study):
        return False
    seen = counts(study, exclude=trial.number)
    return seen.done + seen.running >= budget


def check_fingerprint(study: optuna.Study, hardware: Mapping[str, Any]) -> None:
    """A study runs on one kind of hardware: a worker whose GPUs differ refuses to join."""
    mine = {k: hardware.get(k) for k in FINGERPRINT}
    theirs = study.user_attrs.get(keys.FINGERPRINT)
    if theirs is None:
        study.set_user_attr(keys.FINGERPRINT, mine)
        return
    differ = [k for k in FINGERPRINT if theirs.get(k) != mine[k]]
    if differ:
        said = ", ".join(f"{k} {mine[k]!r} (study: {theirs.get(k)!r})" for k in differ)
        raise UserError(
            f"this worker's hardware differs from study {study.study_name!r}: {said}; "
            "workers of one study need the same GPUs: run a separate study (another --storage) "
            "per kind of hardware"
        )


def finisher(study: optuna.Study) -> str | None:
    """None when this worker should finish the study (choose and save); otherwise why not.
    The worker whose trial completed last finishes; one that ran nothing finishes when no
    other worker is running."""
    if not heartbeat_enabled(study):
        return None
    seen = counts(study)
    if seen.running - seen.mine > 0:
        return f"{seen.running - seen.mine} trial(s) of other workers still running"
    finished = [
        t
        for t in study.get_trials(deepcopy=False)
        if TrialRecord.of(t).launched and t.datetime_complete is not None
    ]
    told = any(TrialRecord.of(t).worker == WORKER_ID for t in finished)
    if not told or not finished:
        return None
    last = max(finished, key=lambda t: (t.datetime_complete, t.number))
    worker = TrialRecord.of(last).worker
    if worker not in (None, WORKER_ID):
        return f"worker {worker} finished the study last"
    return None


def leads(study: optuna.Study) -> bool:
    """Is this worker the one that makes the study's own moves (the edge climb)? Worker 0 of
    ``--gpus`` or an indexed Job, else the worker that created the study: one per study, so
    two workers never enqueue the same move."""
    index = worker_index()
    if index is not None:
        return index == 0
    return study.user_attrs.get(keys.CREATED_BY) in (None, WORKER_ID)


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask`` with a first heartbeat at once: a worker that dies right away still leaves
    a trial that the others fail and re-run. (Optuna warns that heartbeats are meant for
    ``optimize``; autotune's ask/tell loop beats itself.)"""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        trial = study.ask()
    storage = study._storage
    if isinstance(storage, BaseHeartbeat) and heartbeat_enabled(study):
        storage.record_heartbeat(trial._trial_id)
    return trial


def fail_stale(study: optuna.Study) -> None:
    """Fail the trials whose worker stopped beating; ``retry_stale`` queues them again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def mark(trial: optuna.Trial) -> None:
    """Who launches the trial, and on which GPUs (``CUDA_VISIBLE_DEVICES``)."""
    store(trial, worker=WORKER_ID)
    if (gpus := os.environ.get("CUDA_VISIBLE_DEVICES")) is not None:
        store(trial, gpus=gpus)


def pause() -> None:
    """Between checks of the other workers' trials (jittered: workers do not move in step)."""
    time.sleep(min(heartbeat_s(), 5) * (0.5 + random.random()))


def give_back(study: optuna.Study, trial: optuna.Trial, params: Mapping[str, Any]) -> None:
    """The trial would overshoot the shared budget: not launched; a queued candidate (vLLM's
    defaults, a retry) goes back into the queue."""
    frozen = study.trials[trial.number]
    store(trial, launched=False, outcome=OVER_BUDGET)
    study.tell(trial, state=TrialState.FAIL)
    source = TrialRecord.of(frozen).source or f"given back by trial {trial.number}"
    if "failed_trial" in frozen.system_attrs:  # a retry stays one: its history caps the retries
        kept = {k: frozen.system_attrs[k] for k in ("failed_trial", "retry_history")}
        _requeue(study, frozen, source=source, system_attrs=kept)
    elif "fixed_params" in frozen.system_attrs:
        ran = TrialRecord.of(frozen)  # a re-measure keeps the arguments it is to run
        kept = {"vllm_args": ran.vllm_args} if ran.remeasure else {}
        study.enqueue_trial(dict(params), user_attrs=attrs(source=source, **kept))
    pause()


def is_retry(study: optuna.Study, trial: optuna.Trial) -> bool:
    """The trial re-runs one whose worker stopped (``retry_stale``)."""
    return "failed_trial" in study.trials[trial.number].system_attrs
