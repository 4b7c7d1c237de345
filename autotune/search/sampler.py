"""The study's sampler: which one, with what settings. One place, so that tuning quality
(``benchmarks/tuning_quality.py``), parallel workers and multi-objective studies agree."""

from __future__ import annotations

import optuna


def make_sampler(*, seed: int | None, multi_objective: bool = False) -> optuna.samplers.BaseSampler:
    """TPE (Optuna 5: multivariate, constant liar for parallel workers); infeasible trials carry
    a constraint (``trial.set_constraint``), which TPE reads."""
    del multi_objective  # TPE handles both; kept so callers say what they need
    return optuna.samplers.TPESampler(seed=seed)
