"""After a failure under load, step back in memory, not only in batch size (see
``autotune.search.moves.edge``).

A crash under load, or requests refused mid-benchmark, at utilization ``u`` with batch settings
``b`` says that the runtime peak of ``b`` does not fit in what ``u`` leaves outside the KV
cache. Fewer sequences at ``u`` is one way out; the same ``b`` at a lower utilization, with
more room outside the KV cache, is the other, and often the better one (larger batches at a
slightly smaller KV cache). ``retreat`` proposes that second move, once per failed
configuration whose batches are larger than the best's (or before anything served, or once
``SUSPECT`` batch settings have failed under load at ``u`` or above): ``b`` halfway down to
the highest utilization that has served below ``u`` (the level the study knows works; each
step down gives up KV cache), or a few steps lower when nothing has. A retreat that fails
under load again steps down twice as far as its last step, not below that level
(``_further``: an exponential search for the level that holds the runtime peak; while the
utilization is the suspect, as a first retreat); one that runs short of memory
at startup is bisected (``_between``). At the floor of the memory setting, half the sequences
instead (``_fewer``). Pure: no Optuna.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from autotune.engine.defaults import Value
from autotune.engine.outcome import Outcome
from autotune.search.moves.edge import (
    BATCH_DIMS,
    SHORT,
    Climb,
    Tried,
    batch_valid,
    best_of,
    between,
    covers,
    fit_memory,
    memory_dim,
)
from autotune.search.space import UTIL_STEP, SearchSpace

UNDER_LOAD = (Outcome.CRASH_UNDER_LOAD.value, Outcome.REQUEST_ERRORS.value)
STEPS_DOWN = 3  # utilization steps below the failure when nothing has served below it
# Batch settings failing under load at one utilization that make the utilization itself the
# suspect (its runtime peak outside the reservation), whatever the batches of the best.
SUSPECT = 3


def retreat(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
) -> Climb | None:
    """The last launch's batch settings at a lower utilization, if it failed under load and
    those settings have not been tried below it yet."""
    dim = memory_dim(space)
    launched = [t for t in tried if t.outcome != Outcome.SKIPPED.value]
    if dim is None or not dim.is_float or not launched:
        return None
    last = launched[-1]
    if dim.name not in last.params:
        return None
    if last.outcome in SHORT and last.source.startswith("retreat"):
        return _between(space, tried, last, expected)
    here = float(last.params[dim.name])
    suspect = len(_failed_at(tried, here, dim.name)) >= SUSPECT
    if last.outcome not in UNDER_LOAD:
        return None
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    best = best_of(ok, memory=dim.name) if ok else None
    if best is not None and not _larger(last.params, best.params) and not suspect:
        return None  # smaller batches than the best: nothing to win back by retreating
    if best is not None and here <= float(dim.low):
        return _fewer(space, tried, last, best, here=here)
    if last.source.startswith("retreat") and not suspect:
        return _further(space, tried, last, expected)
    if _tried_below(tried, last.params, memory=dim.name):
        return None  # already tried lower
    served = _served_below(tried, here, memory=dim.name)
    if served is None:
        target = here - STEPS_DOWN * UTIL_STEP
    else:  # halfway down to the level known to work: the KV cache the step gives up is speed
        target = float(between(dim, served, here) or served)
    target = round(max(min(target, here - UTIL_STEP), float(dim.low)), 2)
    return _down(space, tried, last, target, expected, why=f"{last.outcome} at {here}")


def _served_below(tried: Sequence[Tried], level: float, *, memory: str) -> float | None:
    """The highest memory level below ``level`` that some configuration served at."""
    return max(
        (
            float(t.params[memory])
            for t in tried
            if t.outcome == Outcome.OK.value
            and memory in t.params
            and float(t.params[memory]) < level
        ),
        default=None,
    )


def _fewer(
    space: SearchSpace, tried: Sequence[Tried], last: Tried, best: Tried, *, here: float
) -> Climb | None:
    """At the floor of the memory setting no level is left below: half the sequences with the
    same other settings (the runtime peak grows with the requests running), while its batches
    are still larger than the best's."""
    name = "max_num_seqs"
    if name not in space or space[name].fixed or name not in last.params:
        return None
    seqs = int(last.params[name])
    params = batch_valid(dict(last.params) | {name: space[name].clamp(seqs // 2)})
    if int(params[name]) >= seqs or not _larger(params, best.params):
        return None
    if any(dict(t.params) == params for t in tried):
        return None
    why = f"retreat: {name} {seqs} -> {params[name]} ({last.outcome} at the floor, {here})"
    return Climb(params=params, why=why)


def _failed_at(tried: Sequence[Tried], level: float, memory: str) -> set[tuple[object, ...]]:
    """The distinct batch settings that failed under load at ``level`` or above."""
    return {
        tuple(sorted(batch_of(t.params, memory).items()))
        for t in tried
        if t.outcome in UNDER_LOAD and float(t.params.get(memory, 0)) >= level
    }


def _larger(params: Mapping[str, Value], than: Mapping[str, Value]) -> bool:
    """Some batch setting above ``than``'s (a configuration that might serve more)."""
    return any(k in than and params[k] > than[k] for k in BATCH_DIMS if k in params)


def batch_of(params: Mapping[str, Value], memory: str) -> dict[str, Value]:
    """A configuration's settings but the memory one (``memory``)."""
    return {k: v for k, v in params.items() if k != memory}


def _failed_above(tried: Sequence[Tried], at: Tried, *, memory: str) -> list[float]:
    """The levels above ``at``'s where its batch settings failed under load."""
    mine, here = batch_of(at.params, memory), float(at.params[memory])
    return [
        float(t.params[memory])
        for t in tried
        if t.outcome in UNDER_LOAD
        and batch_of(t.params, memory) == mine
        and float(t.params.get(memory, 0)) > here
    ]


def _tried_below(tried: Sequence[Tried], params: Mapping[str, Value], *, memory: str) -> bool:
    """``params``' batch settings have been tried at a lower level already."""
    mine, here = batch_of(params, memory), float(params[memory])
    return any(
        batch_of(t.params, memory) == mine and float(t.params.get(memory, 1)) < here for t in tried
    )


def _further(
    space: SearchSpace,
    tried: Sequence[Tried],
    last: Tried,
    expected: Callable[[Mapping[str, Value]], float | None] | None,
) -> Climb | None:
    """A retreat failed under load again: the runtime peak of its batch settings needs more
    room than the step gave. Step down twice as far as the last step (an exponential search
    for the level that holds it), not below the range."""
    dim = memory_dim(space)
    assert dim is not None
    here = float(last.params[dim.name])
    above = _failed_above(tried, last, memory=dim.name)
    if not above or _tried_below(tried, last.params, memory=dim.name):
        return None
    target = here - 2 * (min(above) - here)
    if (served := _served_below(tried, here, memory=dim.name)) is not None:
        target = max(target, served)  # no lower than the level known to work
    target = round(max(target, float(dim.low)), 2)
    return _down(space, tried, last, target, expected, why=f"{last.outcome} again at {here}")


def _down(
    space: SearchSpace,
    tried: Sequence[Tried],
    last: Tried,
    target: float,
    expected: Callable[[Mapping[str, Value]], float | None] | None,
    *,
    why: str,
) -> Climb | None:
    """``last``'s batch settings at the lower memory level ``target``, unless tried."""
    dim = memory_dim(space)
    assert dim is not None
    here = float(last.params[dim.name])
    if target >= here:
        return None
    params = fit_memory(space, dict(last.params) | {dim.name: target}, expected)
    if any(dict(t.params) == params for t in tried):
        return None
    return Climb(params=params, why=f"retreat: {dim.name} {here} -> {params[dim.name]} ({why})")


def _between(
    space: SearchSpace,
    tried: Sequence[Tried],
    low: Tried,
    expected: Callable[[Mapping[str, Value]], float | None] | None,
) -> Climb | None:
    """A retreat ran short of memory at startup: its batch settings fit only between that level
    and the one they failed under load at. Try the middle; when no step is left between them,
    the same level with half the batched tokens (less activation memory, more KV cache)."""
    dim = memory_dim(space)
    assert dim is not None
    here = float(low.params[dim.name])
    above = _failed_above(tried, low, memory=dim.name)
    if not above:
        return None
    if (middle := between(dim, here, min(above))) is not None:
        params = dict(low.params) | {dim.name: middle}
        why = f"retreat: {dim.name} between {here} (short) and {min(above)} (under load)"
    elif "max_num_batched_tokens" in space and "max_num_batched_tokens" in low.params:
        tokens = space["max_num_batched_tokens"]
        half = tokens.clamp(int(low.params["max_num_batched_tokens"]) // 2)
        params = dict(low.params) | {"max_num_batched_tokens": half}
        params = batch_valid(params)
        why = f"retreat: max_num_batched_tokens {low.params['max_num_batched_tokens']} -> {half}"
    else:
        return None
    params = fit_memory(space, params, expected)
    return None if any(dict(t.params) == params for t in tried) else Climb(params, why)


def crashes_again(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    params: Mapping[str, Value],
    running: Callable[[Mapping[str, Value]], int | None] | None,
) -> str | None:
    """Why ``params`` would crash under load like a launch that did, or None. A crash at
    utilization ``u`` says the runtime peak of the tokens running did not fit outside the KV
    cache there; at ``u`` or above (less room outside it), at least as many sequences holding
    at least as many running tokens (``running``, the memory model's; prediction against
    prediction) have no more room and a peak as high. Other settings the same or larger."""
    dim = memory_dim(space)
    if dim is None or not dim.is_float or running is None or dim.name not in params:
        return None
    mine = None
    for t in tried:
        if t.outcome != Outcome.CRASH_UNDER_LOAD.value or dim.name not in t.params:
            continue
        if float(params[dim.name]) < float(t.params[dim.name]):
            continue
        # batched tokens are the running tokens' business (activation memory, a smaller cache)
        needed = {k: v for k, v in t.params.items() if k != "max_num_batched_tokens"}
        if not covers(needed, params, memory=dim.name):
            continue
        mine = running(params) if mine is None else mine
        theirs = running(t.params)
        if mine is not None and theirs is not None and mine >= theirs:
            return (
                f"predicted {Outcome.CRASH_UNDER_LOAD.value}: {mine} tokens running at "
                f"{dim.name}={params[dim.name]}, {theirs} crashed at {t.params[dim.name]}"
            )
    return None
