"""Measure again before believing that more memory made vLLM slower (see
``autotune.search.moves.edge``).

The climb and the lift rest on one fact: with the same batch settings, more KV cache never slows
vLLM down. One slow run (another job on the machine, a noisy neighbour) contradicts it, and the
study then stops climbing and lifting: every later proposal pays for one outlier. So when a
configuration served more than ``NOISE`` slower than the same batch settings with less memory
(or no faster, where vLLM's counters said the KV cache bound the one with less: preemptions or
a full cache; more KV cache must then help), the one of the two that ran only once runs again
(a re-measure: exactly its arguments; the slower first) before the guide moves on; the medians
then speak for them. At most once per configuration.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.engine.defaults import Value
from autotune.search.moves.alike import (
    more_memory,
    record_bound,
    records_put_to_use,
    runs_alike,
)
from autotune.search.moves.edge import NOISE, memory_dim
from autotune.search.ranking import args_key
from autotune.search.space import SearchSpace
from autotune.trial.record import TrialRecord, attrs, remeasure_source


@dataclass(frozen=True)
class Again:
    """A configuration to launch once more: its parameters and the trial's attributes."""

    params: dict[str, Value]
    marks: dict[str, Any]


def contradiction(study: optuna.Study, *, space: SearchSpace) -> Again | None:
    """A configuration to measure again where one with more memory served slower than the same
    batch settings with less, beyond ``NOISE``: the slower one if it ran once, else the faster
    one if it ran once (None: no such contradiction, or both sides ran twice)."""
    dim = memory_dim(space)
    if dim is None:
        return None
    launches: dict[str, int] = {}  # every launch of a configuration, whatever its outcome
    groups: dict[str, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.of(t)
        if not record.launched or record.params is None:
            continue
        key = args_key(dict(record.params))
        launches[key] = launches.get(key, 0) + 1
        if record.ok and t.values:
            groups.setdefault(key, []).append(t)
    served = [(key, TrialRecord.of(runs[0]).params or {}, runs) for key, runs in groups.items()]
    for key, params, runs in served:
        for other_key, other, others in served:
            if not more_memory(params, other, memory=dim.name):
                continue
            if _value(runs) >= _value(others) * (1.0 - _margin(others)):
                continue
            if (alike := _alike(runs, dim.name)) is not None and alike == _alike(others, dim.name):
                continue  # the guide pools their runs (``alike.ran_alike``)
            if records_put_to_use(_records(runs), _records(others), memory=dim.name):
                continue  # vLLM's counters say the memory served more requests at once
            # The slower one with more memory first; then the faster one with less (its one
            # run may have been the lucky one).
            for again, where in ((runs, key), (others, other_key)):
                if launches[where] == 1:
                    first = TrialRecord.of(again[0])
                    marks = attrs(
                        source=remeasure_source(again[0].number), vllm_args=first.vllm_args
                    )
                    return Again(params=dict(first.params or {}), marks=marks)
    return None


def _margin(less: list[FrozenTrial]) -> float:
    """How much slower more memory may measure before it contradicts: ``NOISE``; nothing where
    vLLM's counters said the KV cache bound the configuration with less memory (preemptions or
    a full cache in every run: more KV cache must then help, so not being faster is already
    suspect)."""
    return 0.0 if all(record_bound(TrialRecord.of(t)) for t in less) else NOISE


def _value(runs: list[FrozenTrial]) -> float:
    return float(statistics.median(float((t.values or [0.0])[0]) for t in runs))


def _records(runs: list[FrozenTrial]) -> list[TrialRecord]:
    return [TrialRecord.of(t) for t in runs]


def _alike(runs: list[FrozenTrial], memory: str) -> str | None:
    return runs_alike(_records(runs), memory=memory)
