"""Study: the Optuna side of tuning. Names, storage, resume and the ask/launch/tell loop; what a
result tells Optuna is in ``tell``, the choice of the best in ``best``."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.exceptions import OptunaError
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from autotune.engine.defaults import Value
from autotune.engine.enginelog import unused
from autotune.engine.outcome import Outcome
from autotune.engine.safety import redact_url
from autotune.errors import StorageError, UserError
from autotune.search import study_keys as keys
from autotune.search.goal import Goal
from autotune.search.moves.guide import Guide
from autotune.search.sampler import make_sampler
from autotune.search.space import SearchSpace
from autotune.search.tell import (
    pruner_for,
    pruning_report,
    stagnated,
    tell,
    tell_infeasible,
)
from autotune.search.workers import coordination as workers
from autotune.search.workers.storage import check_sqlite, driver_url, failure, rdb_storage
from autotune.trial.record import INTERRUPTED, STOPPED, TrialRecord, TrialRow, attrs, store
from autotune.trial.runner import TrialRunner

MAX_SKIPS_IN_A_ROW = 200
CONSTRAINT = "infeasible"  # > 0: the configuration cannot serve (OOM, KV too small, ...)


class Screen(Protocol):
    """The pre-screen: the study's memory knowledge (``search.screen.MemoryScreen``, one per KV
    cache dtype in ``search.screen_by_dtype.DtypeScreens``; ``search.screen_rules.ClassScreen``
    for the failure-class rules alone). Learns from launched trials, predicts and pre-screens
    candidates."""

    @property
    def prescreen(self) -> bool: ...  # False (--no-prescreen): nothing is skipped

    def learn_all(self, trials: Iterable[tuple[int, TrialRecord]]) -> None: ...

    def learn_trial(self, *, trial: int, record: TrialRecord) -> None: ...

    def check(self, args: Mapping[str, Any]) -> str | None: ...

    def predict_kv_tokens(self, args: Mapping[str, Any]) -> int | None: ...


class Reporter(Protocol):
    """Progress sink (``autotune.report.progress``): a live display or plain log lines."""

    def trial_started(
        self, *, number: int, launch: int, budget: int, args: dict[str, Any]
    ) -> None: ...

    def phase(self, text: str) -> None: ...

    def trial_finished(self, trial: FrozenTrial) -> None: ...

    def trial_skipped(self, trial: FrozenTrial) -> None: ...


def study_name(
    *, model: str, hardware_key: str, workload: str, objective: str, space: SearchSpace
) -> str:
    """Model + hardware + workload + objective, plus a short hash of the search space so that a
    re-ranged space starts a new study while the same command resumes the old one."""
    digest = hashlib.sha256(space.describe().encode()).hexdigest()[:6]
    return f"{model}@{hardware_key}@{workload}@{objective}@{digest}"


def storage_url(storage: str | None, *, state_dir: Path) -> str:
    """``--storage`` as given (any Optuna URL), else SQLite under the state directory."""
    if storage:
        return storage
    state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(state_dir / 'studies.db').resolve()}"


def open_study(
    *,
    name: str,
    storage: str | optuna.storages.BaseStorage,
    seed: int | None,
    goal: Goal | None = None,
) -> optuna.Study:
    """Create or resume a study in the goal's directions (TPE; infeasible trials carry a
    constraint; single-objective studies prune mid-benchmark)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    goal = goal or Goal()
    sampler = make_sampler(seed=seed, multi_objective=goal.multi)
    try:
        where = rdb_storage(storage) if isinstance(storage, str) else storage
        try:  # created once: the worker that creates it records itself (see _enqueue_start)
            study = optuna.create_study(
                study_name=name,
                storage=where,
                sampler=sampler,
                directions=list(goal.directions),
                pruner=pruner_for(goal),
            )
            study.set_user_attr(keys.CREATED_BY, workers.WORKER_ID)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(
                study_name=name, storage=where, sampler=sampler, pruner=pruner_for(goal)
            )
    except (ImportError, ValueError, RuntimeError, SQLAlchemyError, OptunaError) as exc:
        # RuntimeError: a schema of another Optuna version; OptunaError: StorageInternalError
        url = redact_url(str(storage))
        raise StorageError(f"cannot open study storage {url}: {failure(exc)}") from None
    if [d.name.lower() for d in study.directions] != list(goal.directions):
        raise UserError(f"study {name!r} exists with other objectives; use another --storage")
    return study


def launches(study: optuna.Study) -> int:
    """Finished engine starts of all workers (interrupted trials, and those of a worker that
    died, do not count: they are re-run)."""
    return workers.counts(study).done


@dataclass(frozen=True)
class StudyPlan:
    """What one ``tune`` run does to a study."""

    study: optuna.Study
    space: SearchSpace
    runner: TrialRunner
    budget: int
    log_dir: Path
    default_params: dict[str, Value]
    enqueue: tuple[dict[str, Value], ...] = ()
    timeout_s: float | None = None
    prescreen: Screen | None = None
    goal: Goal = field(default_factory=Goal)
    prune: bool = False  # stop clearly worse benchmarks early (single-objective studies)
    patience: int = 0  # stop after this many launches without an improvement (0: never)
    min_improvement: float = 0.01  # ... of more than this share of the best value
    guide: Guide | None = None  # climb to the memory edge, local moves, lift


def _enqueue_start(plan: StudyPlan) -> None:
    """vLLM's defaults first in a new study (by the worker that created it: once per study),
    then the user's own candidates (once each)."""
    creator = plan.study.user_attrs.get(keys.CREATED_BY)
    if creator in (None, workers.WORKER_ID) and not plan.study.get_trials(deepcopy=False):
        plan.study.enqueue_trial(plan.default_params, user_attrs=attrs(source="vllm-defaults"))
    for params in plan.enqueue:
        plan.study.enqueue_trial(params, user_attrs=attrs(source="--enqueue"), skip_if_exists=True)


def run_study(plan: StudyPlan, *, reporter: Reporter) -> None:
    """Ask, launch, tell until the launch budget or the timeout is spent. Resumable."""
    _enqueue_start(plan)
    prescreen = plan.prescreen
    if prescreen is not None:
        prescreen.learn_all(
            (t.number, TrialRecord.of(t)) for t in plan.study.get_trials(deepcopy=False)
        )
    started = time.monotonic()
    skipped = 0
    while (done := _free_slot(plan, started=started, reporter=reporter)) is not None:
        if plan.guide is not None and workers.leads(plan.study):
            plan.guide.before_ask(plan.study)
        trial = workers.ask(plan.study)
        asked = TrialRecord.of(trial)  # what was enqueued with it, if any
        params = plan.space.sample(trial)
        if plan.guide is not None and not asked.source:
            params = plan.guide.lift(plan.study, params)  # the sampler's own proposal stays
        store(trial, params=params)
        # A re-measure runs exactly what its finalist ran (finalize.remeasure).
        ran = asked.vllm_args if asked.remeasure else None  # (None: enqueued by an older version)
        args = dict(ran) if ran else plan.space.args(params)
        why = prescreen.check(args) if prescreen is not None else None
        if why is None and plan.guide is not None and prescreen is not None and prescreen.prescreen:
            why = plan.guide.crashes(plan.study, params)  # like a crash under load the study saw
        if why is not None and (asked.remeasure or workers.is_retry(plan.study, trial)):
            why = None  # a finalist, or a trial whose worker died mid-launch: run it as it was
        if why is not None:  # known to fail: recorded as infeasible, never launched
            store(trial, vllm_args=args, outcome=Outcome.SKIPPED, reason=why)
            tell_infeasible(plan.study, trial, goal=plan.goal)
            reporter.trial_skipped(plan.study.trials[trial.number])
            skipped += 1
            if skipped >= MAX_SKIPS_IN_A_ROW:
                break  # the sampler keeps proposing known failures: the space is exhausted
            continue
        skipped = 0
        store(trial, launched=True)
        workers.mark(trial)
        store(trial, vllm_args=args)
        if workers.over_budget(plan.study, trial, budget=plan.budget):
            workers.give_back(plan.study, trial, params)  # another worker took the last launch
            continue
        predicted = prescreen.predict_kv_tokens(args) if prescreen is not None else None
        if predicted is not None:  # before the launch: compared with vLLM's number afterwards
            store(trial, predicted_kv_cache_tokens=predicted)
        reporter.trial_started(number=trial.number, launch=done + 1, budget=plan.budget, args=args)
        log_path = unused(plan.log_dir / f"trial-{trial.number:04d}.log")  # never an old run's
        try:
            report = pruning_report(trial, plan.goal) if plan.prune else None
            runner = plan.runner if report is None else replace(plan.runner, report=report)
            with workers.heartbeat(plan.study, trial):
                result = runner.run(args=args, log_path=log_path, on_phase=reporter.phase)
        except UserError as exc:
            store(trial, outcome=STOPPED, reason=str(exc), log=str(log_path))
            plan.study.tell(trial, state=TrialState.FAIL)
            raise
        except BaseException:
            # Ctrl-C / SIGTERM: the engine is already stopped; run this candidate again next time.
            store(trial, outcome=INTERRUPTED, log=str(log_path))
            plan.study.tell(trial, state=TrialState.FAIL)
            again = (  # a re-measure stays one
                attrs(source=asked.source, vllm_args=args)
                if asked.remeasure
                else attrs(source=f"retry of {trial.number}")
            )
            plan.study.enqueue_trial(params, user_attrs=again)
            raise
        try:
            tell(plan.study, trial, result, goal=plan.goal)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Cut off from the storage for longer than the grace period: another worker
            # failed this trial by heartbeat and queued it again; that re-run counts.
            reporter.phase(f"trial {trial.number}: finished elsewhere (heartbeat); result dropped")
            continue
        if prescreen is not None:
            prescreen.learn_trial(trial=trial.number, record=result.record())
        reporter.trial_finished(plan.study.trials[trial.number])
        if stagnated(plan.study, patience=plan.patience, threshold=plan.min_improvement):
            plan.study.set_user_attr(
                keys.STOPPED_EARLY, f"no improvement in {plan.patience} launches"
            )
            break


def _free_slot(plan: StudyPlan, *, started: float, reporter: Reporter) -> int | None:
    """Launches done when this worker may start another; None when the study's budget is
    spent or the timeout reached. While other workers hold the rest of the budget it waits:
    their trials finish, or their heartbeat stops and the trial comes back to be re-run."""
    waiting = False
    while True:
        workers.fail_stale(plan.study)
        seen = workers.counts(plan.study)
        if seen.done >= plan.budget:
            return None
        if plan.timeout_s is not None and time.monotonic() - started >= plan.timeout_s:
            return None
        if seen.done + seen.running < plan.budget:
            return seen.done
        if not workers.heartbeat_enabled(plan.study):
            return None  # no heartbeat: a running trial of another worker is spent budget
        if not waiting:
            reporter.phase(f"waiting: other workers run the last {seen.running} launch(es)")
            waiting = True
        workers.pause()


def find_studies(storage: str, *, model: str | None) -> list[str]:
    """Names of the studies in a storage, optionally for one model (newest last)."""
    check_sqlite(storage, must_exist=True)  # reading: nothing is created
    try:
        summaries = optuna.get_all_study_summaries(
            storage=driver_url(storage), include_best_trial=False
        )
    except Exception as exc:  # any driver's error: one line, never a traceback
        raise _unreadable(storage, exc) from None
    names = [s.study_name for s in summaries]
    return [n for n in names if model is None or n.split("@", 1)[0] == model]


def load_study(name: str, storage: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=driver_url(storage))
    except Exception as exc:
        raise _unreadable(storage, exc) from None


def _unreadable(storage: str, exc: Exception) -> StorageError:
    if isinstance(exc, ImportError):
        why = "its database driver is not installed (pip install 'vllm-autotune[postgres]')"
    else:
        why = failure(exc)
    return StorageError(f"cannot read study storage {redact_url(storage)}: {why}")


def trial_rows(trials: Sequence[FrozenTrial]) -> list[TrialRow]:
    """One row per trial for tables and JSON."""
    return [
        TrialRow.of(
            number=t.number,
            state=t.state.name,
            record=TrialRecord.of(t),
            params=t.params,
            running=t.state == TrialState.RUNNING,
        )
        for t in trials
    ]
