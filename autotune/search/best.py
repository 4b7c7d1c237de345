"""From a finished study to its best: the feasible trials, ranked (``choice``), the winner."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.search import ranking as choice
from autotune.search.goal import Goal
from autotune.trial.record import TrialRecord


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that served and met every constraint (SLOs, throughput floor)."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if TrialRecord.of(t).ok
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
    """Feasible configurations, best first (repeats grouped, see ``search.ranking.rank``)."""
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
