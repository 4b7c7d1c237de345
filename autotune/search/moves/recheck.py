"""Measure again before believing that more memory made vLLM slower (see
``autotune.search.moves.edge``).

The climb and the lift rest on one fact: with the same batch settings, more KV cache never slows
vLLM down. One slow run (another job on the machine, a noisy neighbour) contradicts it, and the
study then stops climbing and lifting: every later proposal pays for one outlier. So when a
configuration served more than ``NOISE`` slower than the same batch settings with less memory
and it ran only once, it runs again (a re-measure: exactly its arguments) before the guide moves
on; its median then speaks for it. Once per configuration.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.engine.defaults import Value
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
    """The first configuration measured once that served slower than the same batch settings
    with less memory, beyond ``NOISE`` (None: no such contradiction)."""
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
    served = [(TrialRecord.of(runs[0]).params or {}, runs) for runs in groups.values()]
    for params, runs in served:
        if launches[args_key(dict(params))] > 1:
            continue
        value = _value(runs)
        for other, others in served:
            if _less_memory(other, params, memory=dim.name) and value < _value(others) * (
                1.0 - NOISE
            ):
                ran = TrialRecord.of(runs[0])
                marks = attrs(source=remeasure_source(runs[0].number), vllm_args=ran.vllm_args)
                return Again(params=dict(params), marks=marks)
    return None


def _less_memory(a: Mapping[str, Value], b: Mapping[str, Value], *, memory: str) -> bool:
    """``a`` is ``b``'s batch settings with less memory."""
    rest = {k: v for k, v in a.items() if k != memory}
    return rest == {k: v for k, v in b.items() if k != memory} and float(a.get(memory, 0)) < float(
        b.get(memory, 0)
    )


def _value(runs: list[FrozenTrial]) -> float:
    return float(statistics.median(float((t.values or [0.0])[0]) for t in runs))
