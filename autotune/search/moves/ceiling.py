"""A ceiling on the tokens running, learned from crashes under load, and a configuration aimed
under it. Pure: no Optuna.

vLLM's startup profile sizes the KV cache from one dummy batch; what the running batch needs
beyond that at runtime (buffers that grow with the tokens it holds) has to fit in what the
reservation leaves free, ``1 - gpu_memory_utilization`` of the GPU. So the tokens that can run
without an OOM under load fall as the utilization rises: a ceiling ``L(u) = k (1 - u)``. Every
launch bounds ``k``: one that served held its peak (``vllm:kv_cache_usage_perc`` of its logged
KV tokens) at ``u``, so ``k`` is at least that over ``1 - u``; one that crashed under load held at
most its KV cache (or its sequences' requests, if fewer), so ``k`` is below that over ``1 - u``.

Where the cliff is such a ceiling, more KV cache is not more throughput: the best configuration
runs as many requests as fit under ``L(u)`` without preemption, which may be fewer sequences at
a lower utilization. ``aim`` proposes that configuration."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from autotune.engine.defaults import Value
from autotune.engine.outcome import Outcome
from autotune.search.moves.edge import (
    COMPASS,
    FEWER,
    Climb,
    Tried,
    batch_valid,
    best_of,
    memory_dim,
)
from autotune.search.moves.retreat import batch_of
from autotune.search.space import UTIL_STEP, SearchSpace

SEQS = "max_num_seqs"
CHUNK = "max_num_batched_tokens"


@dataclass(frozen=True)
class Ceiling:
    """Bounds on ``k``, the tokens that run per unit of headroom ``1 - u``."""

    low: float  # a launch served this many
    high: float  # a launch crashed under load holding at most this many

    def tokens(self, util: float) -> int:
        """The ceiling's guess at ``util``: geometrically between the bounds."""
        return int(math.sqrt(self.low * self.high) * max(1.0 - util, 0.0))


def learn(
    *, space: SearchSpace, tried: Sequence[Tried], request_tokens: int, most: int
) -> Ceiling | None:
    """The bounds from the study's launches, or None: no crash under load, nothing served
    with its peak KV usage known, bounds that contradict each other (a cliff of another kind),
    or nothing yet that tells the ceiling from a cliff at a fixed utilization (every level
    from one up crashing under load, whatever runs): a launch that served at or above a level
    where another crashed, holding fewer tokens."""
    memory = memory_dim(space)
    if memory is None or not memory.is_float or request_tokens <= 0:
        return None
    low, high = 0.0, math.inf
    served, crashed = 0.0, math.inf  # the highest level that served, the lowest that crashed
    for t in tried:
        level = t.params.get(memory.name)
        if level is None or t.kv_cache_tokens is None or float(level) >= 1.0:
            continue
        room = 1.0 - float(level)
        if t.outcome == Outcome.OK.value and t.peak_kv_pct is not None:
            low = max(low, t.peak_kv_pct / 100.0 * t.kv_cache_tokens / room)
            served = max(served, float(level))
        elif t.outcome == Outcome.CRASH_UNDER_LOAD.value:
            seqs = min(int(t.params.get(SEQS, most)), most)
            high = min(high, min(t.kv_cache_tokens, seqs * request_tokens) / room)
            crashed = min(crashed, float(level))
    if low <= 0.0 or math.isinf(high) or low >= high or served < crashed:
        return None
    return Ceiling(low=low, high=high)


def aim(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    ceiling: Ceiling | None,
    request_tokens: int,
    most: int,
    capacity: Callable[[Mapping[str, Value]], int | None],
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
) -> Climb | None:
    """Where vLLM's counters showed the best configuration's KV cache full
    (``Tried.kv_pressure``; where its sequences bound it, more of them is the fill's move), its
    settings at the utilization and ``max_num_seqs`` that run the most whole requests under the
    ceiling: at each utilization up to the highest that served, as many sequences as the
    ceiling's guess holds (at most ``most``, the requests in flight), counted only where the KV
    cache the memory model predicts holds them too (corrected by the best's own logged KV
    tokens). Where the best's chunk leaves too small a cache at a level for those requests, the
    largest smaller ``max_num_batched_tokens`` whose cache holds them (``largest_chunk``).
    Proposed where that beats the requests the best ran at its peak by one and by ``FEWER``;
    among equals, the lowest utilization (the most room for the runtime peak). Once: a
    launched configuration is not proposed again."""
    memory = memory_dim(space)
    if ceiling is None or memory is None or SEQS not in space or space[SEQS].fixed:
        return None
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    if not ok or request_tokens <= 0:
        return None
    best = best_of(ok, memory=memory.name)
    predicted = capacity(best.params)
    if best.peak_running is None or predicted is None or best.kv_cache_tokens is None:
        return None
    if best.kv_pressure() != "full":  # its sequences bound it, not the KV cache: the fill's
        return None
    bias = best.kv_cache_tokens - predicted
    top = max(float(t.params.get(memory.name, 0.0)) for t in ok)
    pick: tuple[int, dict[str, Value]] | None = None
    low = float(memory.low)
    for step in range(round((top - low) / UTIL_STEP) + 1):  # each level up to the highest served
        level = round(low + step * UTIL_STEP, 2)
        seqs = int(space[SEQS].clamp(min(most, ceiling.tokens(level) // request_tokens)))
        params = batch_valid(dict(best.params) | {memory.name: level, SEQS: seqs})
        if (kv := capacity(params)) is None:
            continue
        need = min(seqs, ceiling.tokens(level) // request_tokens) * request_tokens - bias
        if kv < need and CHUNK in space and not space[CHUNK].fixed:
            # the largest smaller chunk (less activation memory) whose cache holds them all
            low_chunk = int(space[CHUNK].low)
            smaller = largest_chunk(params, int(params[CHUNK]), low_chunk, need, capacity)
            if (more := capacity(smaller)) is not None and more >= need:
                params, kv = smaller, more
        held = kv + bias
        runs = min(seqs, held // request_tokens)
        fits = min(held, seqs * request_tokens) <= ceiling.tokens(level)
        guess = expected(params) if expected is not None else None
        boots = guess is None or level <= guess + 1e-9
        if fits and boots and (pick is None or runs > pick[0]):
            pick = (runs, params)
    if pick is None:
        return None
    runs, params = pick
    now = held_whole(best, request_tokens=request_tokens)
    if runs < now + 1 or runs < now * (1.0 + FEWER) or any(_alike(params, t.params) for t in tried):
        return None
    chunk = f", {CHUNK} {params[CHUNK]}" if params.get(CHUNK) != best.params.get(CHUNK) else ""
    why = (
        f"aim: {SEQS} {best.params.get(SEQS)} -> {params[SEQS]}{chunk} at {memory.name}="
        f"{params[memory.name]} ({now} -> {runs} requests under a ceiling of "
        f"{ceiling.tokens(float(params[memory.name]))} running tokens)"
    )
    return Climb(params=params, why=why)


def _alike(a: Mapping[str, Value], b: Mapping[str, Value]) -> bool:
    """The same settings but for a chunk within the compass's finest step: launched already."""
    if batch_of(a, CHUNK) != batch_of(b, CHUNK):
        return False
    x, y = float(a.get(CHUNK, 1) or 1), float(b.get(CHUNK, 1) or 1)
    return bool(max(x, y) / min(x, y) <= COMPASS[-1])


def held_whole(best: Tried, *, request_tokens: int) -> int:
    """The requests ``best`` ran at once: its peak, but where it preempted, no more than its
    KV cache holds whole (its peak counts requests admitted with part of their context, then
    evicted and recomputed)."""
    peak = best.peak_running or 0
    if not best.preemptions or best.kv_cache_tokens is None or request_tokens <= 0:
        return peak
    return min(peak, best.kv_cache_tokens // request_tokens)


def largest_chunk(
    params: dict[str, Value],
    high: int,
    low: int,
    tokens: int,
    capacity: Callable[[Mapping[str, Value]], int | None],
) -> dict[str, Value]:
    """``params`` at the largest chunk in ``[low, high)`` whose predicted KV cache holds
    ``tokens`` (it shrinks as the chunk grows); at ``low`` where none does."""
    while high - low > 1:
        mid = (low + high) // 2
        if (capacity(params | {CHUNK: mid}) or 0) >= tokens:
            low = mid
        else:
            high = mid
    return batch_valid(params | {CHUNK: low})
