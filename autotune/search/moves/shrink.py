"""Smaller prefill chunks for a KV cache that bound the best configuration (see
``autotune.search.moves.kv_fit``, whose ``prefill`` goes the other way). Pure: no Optuna."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from autotune.engine.defaults import Value
from autotune.engine.outcome import Outcome
from autotune.search.moves.ceiling import largest_chunk, learn
from autotune.search.moves.edge import (
    COMPASS,
    FEWER,
    Climb,
    Tried,
    batch_valid,
    best_of,
    fit_memory,
    memory_dim,
)
from autotune.search.moves.load_shape import wave_up
from autotune.search.space import SearchSpace

NAME = "max_num_batched_tokens"
SEQS = "max_num_seqs"


def shrink(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    request_tokens: int,
    most: int,
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
    capacity: Callable[[Mapping[str, Value]], int | None] | None = None,
) -> Climb | None:
    """Fewer batched tokens where vLLM reported the best configuration's KV cache full
    (``Tried.kv_pressure``): vLLM profiles activation memory for ``max_num_batched_tokens``
    and gives the KV cache what is left, so a smaller chunk leaves room for more requests.
    One launch at the largest smaller size (compass steps, down to the sequences) whose KV
    cache the memory model predicts to hold more requests (of ``request_tokens`` each) than
    the best's: at least one more, and at least ``FEWER`` more (prediction against prediction:
    the model's bias cancels). Where the best's ``max_num_seqs`` is no more than its cache
    holds (a fill sized it), as many sequences as the smaller chunk's cache holds (at most
    ``most``, the requests in flight). Where one more request is a small share (short requests),
    nothing: each chunk has a fixed cost, and one step gains less than one run's noise.

    Where crashes under load have bounded the tokens that may run (``ceiling.learn``), no more
    requests than its guess holds at the best's utilization: the largest chunk whose KV cache
    (corrected by the best's logged KV tokens) holds that many, found between compass steps."""
    memory = memory_dim(space)
    if NAME not in space or capacity is None or memory is None or request_tokens <= 0:
        return None
    dim = space[NAME]
    if dim.fixed:
        return None
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    if not ok:
        return None
    best = best_of(ok, memory=memory.name)
    here, held = best.params.get(NAME), capacity(best.params)
    if here is None or held is None:
        return None
    now = held // request_tokens
    seqs = best.params.get(SEQS)
    sized = SEQS in space and not space[SEQS].fixed and seqs is not None and int(seqs) <= now
    if best.kv_pressure() != "full" and not (sized and _seqs_bound(best, most)):
        return None
    seen = [dict(t.params) for t in tried]
    cap = _cap(space, tried, best, request_tokens=request_tokens, most=most, memory=memory.name)
    if cap is not None and cap < now + 1:
        return None
    bias = 0 if best.kv_cache_tokens is None else best.kv_cache_tokens - held
    above = int(here)
    for step in range(1, 4 * len(COMPASS) + 1):  # 2 ** -(step / 4): down to 1/8
        size = dim.clamp(round(float(here) * 2.0 ** (-step / 4)))
        params = batch_valid(dict(best.params) | {NAME: size})
        if params[NAME] >= here:
            return None  # at the sequences or the range's floor
        kv = capacity(params)
        if kv is None:
            return None
        more = kv // request_tokens
        if cap is not None and (kv + bias) // request_tokens > cap:  # under the ceiling
            params = largest_chunk(
                params, above, int(params[NAME]), (cap * request_tokens) - bias, capacity
            )
            more = min(cap, (capacity(params) or 0) // request_tokens)
        above = int(params[NAME])
        if sized and more > now:  # sequences sized to the cache: as many as it now holds
            count = wave_up(min(more, most), most, reach=COMPASS[-1])
            params = batch_valid(params | {SEQS: space[SEQS].clamp(count)})
            more = min(more, (capacity(params) or 0) // request_tokens)
        params = fit_memory(space, params, expected)
        if more >= now + 1 and more >= now * (1.0 + FEWER):
            if params in seen:
                return None
            why = f"shrink: {NAME} {here} -> {params[NAME]} ({now} -> {more} requests fit)"
            return Climb(params=params, why=why)
    return None


def _cap(
    space: SearchSpace,
    tried: Sequence[Tried],
    best: Tried,
    *,
    request_tokens: int,
    most: int,
    memory: str,
) -> int | None:
    """The requests that may run at the best's utilization under the ceiling learned from
    crashes under load, or None (no ceiling): as many as its guess holds; where that is no
    more than the best ran, one more, if no crash rules it out (an edge between what served
    and what crashed, worth a launch where one request is a large share)."""
    bound = learn(space=space, tried=tried, request_tokens=request_tokens, most=most)
    if bound is None:
        return None
    room = 1.0 - float(best.params[memory])
    guess = bound.tokens(float(best.params[memory])) // request_tokens
    runs = best.peak_running or 0
    if guess <= runs and (runs + 1) * request_tokens < bound.high * room:
        return runs + 1
    return guess


def _seqs_bound(best: Tried, most: int) -> bool:
    """Every sequence ran at the best's peak, fewer than the requests in flight, with its KV
    cache at least half used: a fill sized the sequences to the cache, and more of them need a
    larger cache (a smaller chunk) as well."""
    seqs = best.params.get(SEQS)
    return (
        seqs is not None
        and best.peak_running is not None
        and int(seqs) < most
        and best.peak_running >= int(seqs)
        and best.kv_pressure() is None
    )
