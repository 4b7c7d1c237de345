"""Study: the Optuna side of tuning. Names, storage, resume, the ask/tell loop and the choice
of the best trial. The only module (with ``api``) that imports Optuna."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune import choice, workers
from autotune.errors import UserError
from autotune.goals import Goal, reserved_gib
from autotune.guide import PARAMS, Guide
from autotune.objective import Report, TrialResult, TrialRunner
from autotune.outcome import Outcome
from autotune.ranges import Value
from autotune.safety import redact_url
from autotune.sampling import make_sampler
from autotune.space import SearchSpace

MAX_SKIPS_IN_A_ROW = 200
CONSTRAINT = "infeasible"  # > 0: the configuration cannot serve (OOM, KV too small, ...)
INTERRUPTED = "interrupted"


class Screen(Protocol):
    """The study's memory knowledge (``predict.MemoryKnowledge``; ``feasibility.Prescreen`` for
    the class rules alone): learns from launched trials, predicts and pre-screens candidates."""

    def learn_all(self, trials: Iterable[tuple[int, Mapping[str, Any]]]) -> None: ...

    def learn_trial(self, *, trial: int, attrs: Mapping[str, Any]) -> None: ...

    def check(self, args: Mapping[str, Any]) -> str | None: ...

    def predict_kv_tokens(self, args: Mapping[str, Any]) -> int | None: ...


class Reporter(Protocol):
    """Progress sink (``progress.py``): a live display or plain log lines."""

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
        where = workers.rdb_storage(storage) if isinstance(storage, str) else storage
        try:  # created once: the worker that creates it records itself (see _enqueue_start)
            study = optuna.create_study(
                study_name=name,
                storage=where,
                sampler=sampler,
                directions=list(goal.directions),
                pruner=_pruner(goal),
            )
            study.set_user_attr(workers.CREATED_BY, workers.WORKER_ID)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(
                study_name=name, storage=where, sampler=sampler, pruner=_pruner(goal)
            )
    except (ImportError, ValueError, optuna.exceptions.StorageInternalError) as exc:
        url = redact_url(str(storage))
        raise UserError(f"cannot open study storage {url}: {redact_url(str(exc))}") from None
    if [d.name.lower() for d in study.directions] != list(goal.directions):
        raise UserError(f"study {name!r} exists with other objectives; use another --storage")
    return study


def launches(study: optuna.Study) -> int:
    """Finished engine starts of all workers (interrupted trials, and those of a worker that
    died, do not count: they are re-run)."""
    return workers.counts(study).done


def _pruner(goal: Goal) -> optuna.pruners.BasePruner:
    """Throughput and goodput studies stop a clearly worse benchmark: below the median at the
    same step by more than a quarter (after 5 trials and 2 steps); others never prune."""
    if goal.kind in ("throughput", "goodput"):
        return MarginPruner(margin=0.25, n_startup_trials=5, n_warmup_steps=2)
    return optuna.pruners.NopPruner()


class MarginPruner(optuna.pruners.BasePruner):
    """Prune when the trial's latest value is worse than the median of the completed trials'
    values at the same step by more than ``margin`` (in the study's direction)."""

    def __init__(self, *, margin: float, n_startup_trials: int, n_warmup_steps: int) -> None:
        self.margin, self.startup, self.warmup = margin, n_startup_trials, n_warmup_steps

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.warmup:
            return False
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        seen = sorted(t.intermediate_values[step] for t in done if step in t.intermediate_values)
        if len(seen) < self.startup:
            return False
        median = seen[len(seen) // 2]
        value = trial.intermediate_values[step]
        if study.direction == optuna.study.StudyDirection.MAXIMIZE:
            return value < median * (1 - self.margin)
        return value > median * (1 + self.margin)


def tell(
    study: optuna.Study, trial: optuna.Trial, result: TrialResult, *, goal: Goal | None = None
) -> None:
    """Map an outcome to Optuna: infeasible, or a missed SLO or floor → COMPLETE + violated
    constraint (worst values when it did not serve); pruned → PRUNED; harness errors → FAIL
    (see optuna5.md). Every trial sets the same constraint keys."""
    goal = goal or Goal()
    attrs = result.attrs()
    reserved, source = reserved_gib(result.args, attrs["startup"], total_gib=goal.total_gib)
    attrs |= {"reserved_gib": reserved, "reserved_source": source}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if result.outcome is Outcome.OK and result.metrics is not None:
        metrics = result.metrics.to_dict()
        for key, value in goal.constraints(metrics, ok=True).items():
            trial.set_constraint(key, value)
        if missed := goal.missed(metrics):
            trial.set_user_attr("missed", missed)
        values = goal.values(
            throughput=result.throughput, goodput=result.goodput, reserved_gib=reserved
        )
        study.tell(trial, values)
    elif result.outcome is Outcome.PRUNED:
        study.tell(trial, state=TrialState.PRUNED)
    elif result.outcome.infeasible:
        tell_infeasible(study, trial, goal=goal)
    else:
        study.tell(trial, state=TrialState.FAIL)


def tell_infeasible(study: optuna.Study, trial: optuna.Trial, *, goal: Goal) -> None:
    """Every constraint violated, the goal's worst values (never inf)."""
    for key in goal.constraint_keys:
        trial.set_constraint(key, 1.0)
    study.tell(trial, goal.worst())


def pruning_report(trial: optuna.Trial, goal: Goal) -> Report | None:
    """Intermediate values for the pruner, in the objective's own direction (single-objective
    throughput or goodput only; the warm-up is never reported)."""
    if goal.kind not in ("throughput", "goodput"):
        return None

    def report(step: int, values: Mapping[str, float]) -> bool:
        trial.report(values.get(goal.kind, 0.0), step)
        return trial.should_prune()

    return report


def stagnated(study: optuna.Study, *, patience: int, threshold: float) -> bool:
    """No launched trial improved the best value by more than ``threshold`` (a share) in the
    last ``patience`` launches (single-objective studies)."""
    if patience < 1 or len(study.directions) > 1:
        return False
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("launched") and t.value is not None
    ]
    if len(done) <= patience:
        return False
    feasible = [
        sign * float(t.value or 0.0)
        for t in done[:-patience]
        if all(v <= 0 for v in t.constraints.values())
    ]
    before = max(feasible, default=None)
    recent = [
        sign * float(t.value or 0.0)
        for t in done[-patience:]
        if all(v <= 0 for v in t.constraints.values())
    ]
    if before is None:
        return False
    return not any(v > before + abs(before) * threshold for v in recent)


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
    creator = plan.study.user_attrs.get(workers.CREATED_BY)
    if creator in (None, workers.WORKER_ID) and not plan.study.get_trials(deepcopy=False):
        plan.study.enqueue_trial(plan.default_params, user_attrs={"source": "vllm-defaults"})
    for params in plan.enqueue:
        plan.study.enqueue_trial(params, user_attrs={"source": "--enqueue"}, skip_if_exists=True)


def run_study(plan: StudyPlan, *, reporter: Reporter) -> None:
    """Ask, launch, tell until the launch budget or the timeout is spent. Resumable."""
    _enqueue_start(plan)
    prescreen = plan.prescreen
    if prescreen is not None:
        prescreen.learn_all((t.number, t.user_attrs) for t in plan.study.get_trials(deepcopy=False))
    started = time.monotonic()
    skipped = 0
    while (done := _free_slot(plan, started=started, reporter=reporter)) is not None:
        if plan.guide is not None and workers.leads(plan.study):
            plan.guide.before_ask(plan.study)
        trial = workers.ask(plan.study)
        params = plan.space.sample(trial)
        if plan.guide is not None and "source" not in trial.user_attrs:
            params = plan.guide.lift(plan.study, params)  # the sampler's own proposal stays
        trial.set_user_attr(PARAMS, params)
        args = plan.space.args(params)
        why = prescreen.check(args) if prescreen is not None else None
        if why is not None and workers.is_retry(plan.study, trial):
            why = None  # its worker died mid-launch: re-run it as it was
        if why is not None:  # known to fail: recorded as infeasible, never launched
            trial.set_user_attr("vllm_args", dict(args))
            trial.set_user_attr("outcome", Outcome.SKIPPED.value)
            trial.set_user_attr("reason", why)
            tell_infeasible(plan.study, trial, goal=plan.goal)
            reporter.trial_skipped(plan.study.trials[trial.number])
            skipped += 1
            if skipped >= MAX_SKIPS_IN_A_ROW:
                break  # the sampler keeps proposing known failures: the space is exhausted
            continue
        skipped = 0
        trial.set_user_attr("launched", True)
        workers.mark(trial)
        trial.set_user_attr("vllm_args", dict(args))
        if workers.over_budget(plan.study, trial, budget=plan.budget):
            workers.give_back(plan.study, trial, params)  # another worker took the last launch
            continue
        predicted = prescreen.predict_kv_tokens(args) if prescreen is not None else None
        if predicted is not None:  # before the launch: compared with vLLM's number afterwards
            trial.set_user_attr("predicted_kv_cache_tokens", predicted)
        reporter.trial_started(number=trial.number, launch=done + 1, budget=plan.budget, args=args)
        log_path = plan.log_dir / f"trial-{trial.number:04d}.log"
        try:
            report = pruning_report(trial, plan.goal) if plan.prune else None
            runner = plan.runner if report is None else replace(plan.runner, report=report)
            with workers.heartbeat(plan.study, trial):
                result = runner.run(args=args, log_path=log_path, on_phase=reporter.phase)
        except UserError as exc:
            trial.set_user_attr("outcome", "stopped")
            trial.set_user_attr("reason", str(exc))
            trial.set_user_attr("log", str(log_path))
            plan.study.tell(trial, state=TrialState.FAIL)
            raise
        except BaseException:
            # Ctrl-C / SIGTERM: the engine is already stopped; run this candidate again next time.
            trial.set_user_attr("outcome", INTERRUPTED)
            trial.set_user_attr("log", str(log_path))
            plan.study.tell(trial, state=TrialState.FAIL)
            plan.study.enqueue_trial(params, user_attrs={"source": f"retry of {trial.number}"})
            raise
        tell(plan.study, trial, result, goal=plan.goal)
        if prescreen is not None:
            prescreen.learn_trial(trial=trial.number, attrs=result.attrs())
        reporter.trial_finished(plan.study.trials[trial.number])
        if stagnated(plan.study, patience=plan.patience, threshold=plan.min_improvement):
            plan.study.set_user_attr("stopped_early", f"no improvement in {plan.patience} launches")
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


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that served and met every constraint (SLOs, throughput floor)."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("outcome") == Outcome.OK.value
        and t.values is not None
        and all(v <= 0 for v in t.constraints.values())
    ]


def ranked(
    study: optuna.Study,
    *,
    goal: Goal,
    noise: float,
    statistic: str = "worst",
    repeats: int = 1,
    most_images: bool = False,
) -> list[choice.Candidate]:
    """Feasible configurations, best first (repeats grouped, see ``choice.rank``)."""
    cands = choice.candidates(study.get_trials(deepcopy=False), goal=goal, statistic=statistic)
    return choice.rank(cands, goal=goal, noise=noise, repeats=repeats, most_images=most_images)


def choose_best(
    study: optuna.Study, *, noise: float, most_images: bool = False, goal: Goal | None = None
) -> FrozenTrial | None:
    """The best feasible trial; among results within ``noise`` of the best value, the one with
    the longest ``max_model_len`` (the context the application can use), then the best.
    ``most_images``: the largest image limit with a usable throughput (half the best or more)."""
    best = ranked(study, goal=goal or Goal(), noise=noise, most_images=most_images)
    return study.trials[best[0].chosen.number] if best else None


def find_studies(storage: str, *, model: str | None) -> list[str]:
    """Names of the studies in a storage, optionally for one model (newest last)."""
    summaries = optuna.get_all_study_summaries(
        storage=workers.driver_url(storage), include_best_trial=False
    )
    names = [s.study_name for s in summaries]
    return [n for n in names if model is None or n.split("@", 1)[0] == model]


def load_study(name: str, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=workers.driver_url(storage))


def trial_rows(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """One plain row per trial for tables and JSON."""
    rows = []
    for t in trials:
        attrs = t.user_attrs
        metrics = attrs.get("metrics") or {}
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "outcome": attrs.get(
                    "outcome", "running" if t.state == TrialState.RUNNING else "-"
                ),
                "args": attrs.get("vllm_args") or t.params,
                "throughput": metrics.get("output_throughput"),
                "ttft_p95_ms": metrics.get("ttft_ms_p95"),
                "tpot_p95_ms": metrics.get("tpot_ms_p95"),
                "kv_cache_tokens": (attrs.get("startup") or {}).get("kv_cache_tokens"),
                "predicted_kv_cache_tokens": attrs.get("predicted_kv_cache_tokens"),
                "reason": attrs.get("reason", ""),
                "estimated_max_model_len": attrs.get("estimated_max_model_len"),
                "log": attrs.get("log", ""),
                "source": attrs.get("source", ""),
            }
        )
    return rows
