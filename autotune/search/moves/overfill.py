"""More sequences than the KV cache holds whole requests: a running request holds its prompt
and the output generated so far, about half its output on average once the requests no longer
start together, so a cache that holds N whole requests runs more than N at once; vLLM preempts
(and later recomputes) the newest where it fills. ``kv_fit.fill`` sizes to whole requests;
this move tries the count the cache holds at that mean footprint. Pure: no Optuna."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from autotune.engine.defaults import Value
from autotune.engine.outcome import Outcome
from autotune.search.moves.edge import (
    COMPASS,
    KV_TIGHT,
    Climb,
    Tried,
    batch_valid,
    best_of,
    fit_memory,
    memory_dim,
)
from autotune.search.moves.kv_fit import failed_cap
from autotune.search.moves.load_shape import Load
from autotune.search.moves.retreat import batch_of
from autotune.search.space import SearchSpace

SEQS = "max_num_seqs"
FULL = KV_TIGHT  # % of the KV cache the best used at its peak: the cache, not the batch, binds


def overfill(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    load: Load,
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
) -> Climb | None:
    """The best's ``max_num_seqs`` raised to the requests its logged KV cache holds at their
    mean footprint (the prompt and half the output), at most the requests in flight, where all its
    sequences ran, its cache was ``FULL`` at the peak and vLLM preempted nothing (the cache,
    sized to whole requests, bound before any request needed its whole length), and that is
    more than the compass's finest step above. The utilization comes down to the model's edge
    for the larger batch (``expected``). Not where as many failed for memory at that level
    (``kv_fit.failed_cap``); once per batch setting."""
    memory = memory_dim(space)
    prompt_tokens, most = load.prompt_tokens, load.in_flight
    output = load.request_tokens - prompt_tokens
    if memory is None or SEQS not in space or space[SEQS].fixed or min(output, prompt_tokens) <= 0:
        return None
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    if not ok:
        return None
    best = best_of(ok, memory=memory.name)
    seqs, kv = best.params.get(SEQS), best.kv_cache_tokens
    if seqs is None or kv is None or best.preemptions != 0 or best.peak_running is None:
        return None
    seqs = int(seqs)
    if best.peak_running < seqs or (best.peak_kv_pct or 0.0) < FULL:
        return None
    target = int(space[SEQS].clamp(min(most, int(kv / (prompt_tokens + output / 2)))))
    if target <= seqs * COMPASS[-1]:
        return None
    params = fit_memory(space, batch_valid(dict(best.params) | {SEQS: target}), expected)
    if any(batch_of(t.params, memory.name) == batch_of(params, memory.name) for t in tried):
        return None
    cap = failed_cap(tried, params, memory)
    if cap is not None and target >= cap:
        return None  # as many failed for memory there
    why = f"overfill: {SEQS} {seqs} -> {target} ({kv} KV tokens, requests at half their output)"
    return Climb(params=params, why=why)
