"""From a finished study to its best: the feasible trials, ranked (``choice``), the winner."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.search import ranking as choice
from autotune.search.goal import Goal
from autotune.search.moves.alike import records_put_to_use
from autotune.search.space import memory_name
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
    out = choice.rank(cands, goal=goal, noise=noise, repeats=repeats, most_images=most_images)
    return out if goal.multi or most_images else upgraded(out)


def upgraded(ranked: Sequence[choice.Candidate]) -> list[choice.Candidate]:
    """Each candidate in its place replaced by one that put more memory to use than it
    (``moves.alike.put_to_use``: the same batch settings, a KV cache that bound it, and more
    requests running or fewer preemptions with more memory), which serves at least as fast
    whatever their noisy runs say; each configuration once, at its first place."""
    out: list[choice.Candidate] = []
    for c in ranked:
        while (up := next((d for d in ranked if _put_to_use(d, c)), None)) is not None:
            c = up
        if c not in out:
            out.append(c)
    return out


def _put_to_use(more: choice.Candidate, less: choice.Candidate) -> bool:
    runs, others = _records(more), _records(less)
    memory = memory_name(others[0].params or {})
    return memory is not None and records_put_to_use(runs, others, memory=memory)


def _records(c: choice.Candidate) -> list[TrialRecord]:
    return [TrialRecord.of(t) for t in c.trials]


def choose_best(
    study: optuna.Study, *, noise: float, most_images: bool = False, goal: Goal | None = None
) -> FrozenTrial | None:
    """The best feasible trial; among results within ``noise`` of the best value, the one with
    the longest ``max_model_len`` (the context the application can use), then the best.
    ``most_images``: the largest image limit with a usable throughput (half the best or more)."""
    best = ranked(study, goal=goal or Goal(), noise=noise, most_images=most_images)
    return study.trials[best[0].chosen.number] if best else None
