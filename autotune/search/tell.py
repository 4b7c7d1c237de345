"""From a trial's result to Optuna: objective values and constraints, the pruner and its
intermediate reports, and when a study has stopped improving."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.engine.outcome import Outcome
from autotune.search.goal import Goal, reserved_gib
from autotune.trial.record import RESULT_FIELDS, TrialRecord, store, write
from autotune.trial.runner import Report, TrialResult


def pruner_for(goal: Goal) -> optuna.pruners.BasePruner:
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
    reserved, source = reserved_gib(result.args, result.startup, total_gib=goal.total_gib)
    record = replace(result.record(), reserved_gib=reserved, reserved_source=source)
    write(trial, record.to_attrs(only=(*RESULT_FIELDS, "reserved_gib", "reserved_source")))
    if result.outcome is Outcome.OK and result.metrics is not None:
        metrics = result.metrics.to_dict()
        capacity = result.capacity.rate if result.capacity is not None else None
        for key, value in goal.constraints(metrics, ok=True, capacity=capacity).items():
            trial.set_constraint(key, value)
        missed = goal.missed(metrics)
        if goal.kind == "capacity" and capacity is None:
            missed = missed or ["no request rate met the SLOs"]
        if missed:
            store(trial, missed=tuple(missed))
        values = goal.values(
            throughput=result.throughput,
            goodput=result.goodput,
            reserved_gib=reserved,
            capacity=capacity,
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
        if TrialRecord.of(t).launched and t.value is not None
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
