"""One wave fewer: the benchmark's requests arrive together and run in waves of at most
``max_num_seqs``; the last, short wave runs its decode steps nearly empty. Where the best's
sequences all ran, a few more that take the requests in one wave fewer are worth a launch
(see ``autotune.search.moves.load_shape.waves``). Pure: no Optuna."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from autotune.engine.defaults import Value
from autotune.engine.outcome import Outcome
from autotune.search.moves.ceiling import CHUNK, largest_chunk, learn
from autotune.search.moves.edge import (
    COMPASS,
    Climb,
    Tried,
    batch_valid,
    best_of,
    fit_memory,
    memory_dim,
)
from autotune.search.moves.kv_fit import failed_cap
from autotune.search.moves.load_shape import waves
from autotune.search.moves.retreat import batch_of
from autotune.search.space import SearchSpace

SEQS = "max_num_seqs"
REACH = COMPASS[1]  # at most this many times the best's sequences
MOST_WAVES = 6  # one wave fewer of more saves less than a run's noise
KV_ROOM = 102.0  # % of the KV cache the target's sequences may use at the best's peak usage


def fewer_waves(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    most: int,
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
    request_tokens: int = 0,
    capacity: Callable[[Mapping[str, Value]], int | None] | None = None,
) -> Climb | None:
    """The best's ``max_num_seqs`` raised to the fewest sequences that take the ``most``
    requests in flight in one wave fewer, where every sequence ran at the best's peak, its KV
    cache was not full (more sequences would only wait or preempt) and, used as much per
    sequence, would hold them (``KV_ROOM``: blocks and a sampled peak), the requests take at most
    ``MOST_WAVES`` waves and that is at most ``REACH`` times as many. Where the cache would not
    hold them, the largest smaller chunk whose cache (by the memory model ``capacity``, corrected
    by the best's logged KV tokens) holds them all, unless a crash under load at a ceiling on
    the running tokens (``ceiling.learn``) rules that many out. Once per batch setting."""
    memory = memory_dim(space)
    if memory is None or SEQS not in space or space[SEQS].fixed or most <= 1:
        return None
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    if not ok:
        return None
    best = best_of(ok, memory=memory.name)
    seqs = best.params.get(SEQS)
    if seqs is None or best.peak_running is None:
        return None
    seqs = int(seqs)
    now = waves(seqs, most)
    if best.peak_running < seqs or now <= 1 or now > MOST_WAVES:
        return None
    target = int(space[SEQS].clamp(-(-most // (now - 1))))
    if target <= seqs or target > seqs * REACH:
        return None
    params = batch_valid(dict(best.params) | {SEQS: target})
    if best.kv_pressure() == "full" or (best.peak_kv_pct or 0.0) * target / seqs > KV_ROOM:
        # the cache, used as at the best's peak per sequence, would not hold them
        sized = _smaller_chunk(space, tried, best, params, request_tokens, most, capacity)
        if sized is None:
            return None
        params = sized
    params = fit_memory(space, params, expected)
    if any(batch_of(t.params, memory.name) == batch_of(params, memory.name) for t in tried):
        return None
    cap = failed_cap(tried, params, memory)
    if cap is not None and target >= cap:
        return None  # as many failed for memory there
    chunk = f", {CHUNK} {params[CHUNK]}" if params.get(CHUNK) != best.params.get(CHUNK) else ""
    why = f"waves: {SEQS} {seqs} -> {target}{chunk} ({most} requests in {now - 1} waves, not {now})"
    return Climb(params=params, why=why)


def _smaller_chunk(
    space: SearchSpace,
    tried: Sequence[Tried],
    best: Tried,
    params: dict[str, Value],
    request_tokens: int,
    most: int,
    capacity: Callable[[Mapping[str, Value]], int | None] | None,
) -> dict[str, Value] | None:
    """``params`` at the largest chunk below the best's whose cache holds all its sequences'
    requests (used as at the best's peak, where its cache was not full), or None: no model, no
    such chunk, or a ceiling's crash rules them out."""
    if capacity is None or request_tokens <= 0 or CHUNK not in space or space[CHUNK].fixed:
        return None
    predicted, memory = capacity(best.params), memory_dim(space)
    if predicted is None or best.kv_cache_tokens is None or memory is None:
        return None
    target, seqs, kv = int(params[SEQS]), int(best.params[SEQS]), best.kv_cache_tokens
    tokens = target * request_tokens
    if best.kv_pressure() != "full" and best.peak_kv_pct is not None:
        # used as at the best's peak per sequence (requests are not all at full length at once)
        tokens = int(best.peak_kv_pct / KV_ROOM * kv * target / seqs)
    bound = learn(space=space, tried=tried, request_tokens=request_tokens, most=most)
    if bound is not None and tokens >= bound.high * (1.0 - float(best.params[memory.name])):
        return None  # as many running tokens crashed under load
    need = tokens - (kv - predicted)
    low = int(space[CHUNK].low)
    sized = largest_chunk(params, int(best.params[CHUNK]), low, need, capacity)
    return sized if (capacity(sized) or 0) >= need else None
