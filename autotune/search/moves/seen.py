"""The study's finished trials as the moves see them (``edge.Tried``): pre-screened ones as the
class they would hit, repeats of one configuration as one entry, and configurations that ran
alike pooled (``alike``)."""

from __future__ import annotations

import dataclasses
import statistics

import optuna
from optuna.trial import TrialState

from autotune.engine.outcome import Outcome
from autotune.search.moves import edge
from autotune.search.moves.alike import credit_used, tried_alike
from autotune.search.ranking import args_key
from autotune.trial.record import TrialRecord


def tried(study: optuna.Study, *, memory: str | None = None) -> list[edge.Tried]:
    """Finished trials as the climb sees them (pre-screened ones as the class they would hit).
    A configuration that served more than once is one entry with the median of its values.
    With ``memory`` (the memory setting's name), configurations that ran alike pool their runs
    (``alike.ran_alike``): each keeps its entry, with the median of the pool's values; and one
    that put more memory to use than another is valued at least as high (``alike.credit_used``)."""
    out = _each_tried(study)
    pool: dict[str, str] = {}  # a configuration's key -> its pool's (its first run's)
    runs: dict[str, list[float]] = {}
    for t in out:
        if t.outcome == Outcome.OK.value and t.value is not None:
            key = pool.setdefault(args_key(dict(t.params)), _pool_key(t, memory))
            runs.setdefault(key, []).append(t.value)
    merged, seen = [], set()
    for t in out:
        key = args_key(dict(t.params))
        if t.outcome == Outcome.OK.value and t.value is not None:
            if key in seen:
                continue
            seen.add(key)
            t = dataclasses.replace(t, value=statistics.median(runs[pool[key]]))
        merged.append(t)
    return merged if memory is None else credit_used(merged, memory=memory)


def _pool_key(t: edge.Tried, memory: str | None) -> str:
    """Runs of one configuration share a key; with ``memory``, so do configurations that ran
    alike (``alike.ran_alike``)."""
    alike = tried_alike(t, memory=memory) if memory is not None else None
    return args_key(dict(t.params)) if alike is None else alike


def _each_tried(study: optuna.Study) -> list[edge.Tried]:
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.of(t)
        outcome = record.outcome or ""
        if outcome == Outcome.SKIPPED.value:
            outcome = record.reason.split(":")[0].removeprefix("predicted ")
        elif outcome == Outcome.OK.value and any(v > 0 for v in t.constraints.values()):
            outcome = "missed constraints"
        value = t.values[0] if t.values else None
        out.append(
            edge.Tried(
                record.params or t.params,
                outcome,
                value,
                record.estimated_max_model_len or None,
                record.startup.kv_cache_tokens or None,
                record.source,
                record.preemptions,
                record.peak_kv_cache_usage_pct,
                record.peak_requests_running,
                record.peak_requests_waiting,
            )
        )
    return out
