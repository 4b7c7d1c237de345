"""Moves that fit a configuration to its KV cache (see ``autotune.search.moves.edge``): ``repair`` a
KV-too-small failure at the length that fits, ``fill`` ``max_num_seqs`` with the requests
the KV cache holds, and ``prefill`` long prompts in larger chunks where the KV cache allows.
Pure: no Optuna."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from autotune.engine.defaults import Value
from autotune.engine.outcome import Outcome
from autotune.search.moves.edge import (
    COMPASS,
    NOISE,
    SHORT,
    Climb,
    Tried,
    batch_valid,
    best_of,
    fit_memory,
    memory_dim,
    util_floor,
)
from autotune.search.moves.load_shape import waves
from autotune.search.moves.retreat import UNDER_LOAD, batch_of
from autotune.search.space import Dim, SearchSpace

DEFAULT_UTIL = 0.9  # vLLM's gpu_memory_utilization default
CHUNKS = 4  # prefill: prompts this many chunks long or longer try larger chunks
DECODE = 0.2  # prefill first where decode tokens take this share of each step's budget or more


def fill(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    request_tokens: int,
    most: int,
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
    capacity: Callable[[Mapping[str, Value]], int | None] | None = None,
) -> Climb | None:
    """``max_num_seqs`` of a configuration near the best (within ``NOISE``, best first) set to
    the requests its KV cache holds (vLLM's "Maximum concurrency"), at most ``most`` (the
    requests in flight): fewer leave KV cache idle, more only queue or preempt. The utilization
    comes down to the model's edge for the larger batches (``expected``), and
    ``max_model_len`` to the KV tokens the model predicts for them (``capacity``), so the move
    can start; halfway (geometrically) to a count already known to fail for memory there
    (``failed_cap``). Once per batch setting (whatever the memory setting it ran at)."""
    if "max_num_seqs" not in space or space["max_num_seqs"].fixed or request_tokens <= 0:
        return None
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    if not ok:
        return None
    top = max(t.value or 0.0 for t in ok)
    memory = memory_dim(space)
    name = memory.name if memory is not None else ""
    near = sorted(  # equal values (runs pooled): the most memory, the largest KV cache, first
        (t for t in ok if (t.value or 0.0) >= top * (1.0 - NOISE)),
        key=lambda t: (-(t.value or 0.0), -float(t.params.get(name, 0.0))),
    )
    # A batch setting launched at any memory setting is known: the climb and the lift, not
    # another fill, move its memory.
    seen = [batch_of(t.params, name) for t in tried]
    for t in near:
        move = _fill_one(space, t, request_tokens, most, expected, capacity, tried)
        if move is not None and batch_of(move.params, name) not in seen:
            return move
    return None


def _fill_one(
    space: SearchSpace,
    best: Tried,
    request_tokens: int,
    most: int,
    expected: Callable[[Mapping[str, Value]], float | None] | None,
    capacity: Callable[[Mapping[str, Value]], int | None] | None,
    tried: Sequence[Tried],
) -> Climb | None:
    seqs = best.params.get("max_num_seqs")
    if best.kv_cache_tokens is None or seqs is None:
        return None
    dim = space["max_num_seqs"]

    def at(target: Value) -> dict[str, Value]:
        params = batch_valid(dict(best.params) | {"max_num_seqs": target})
        return fit_memory(space, params, expected)

    # Never above the requests in flight (``most``): more never run, and cost CUDA-graph memory.
    target = int(dim.clamp(min(best.kv_cache_tokens // request_tokens, most)))
    params = at(target)
    tokens = capacity(params) if capacity is not None else None
    if tokens is not None and capacity is not None:  # where the new settings' cache holds them
        target = _holds(
            capacity, at, low=min(target, int(seqs)), high=max(target, min(int(seqs), most)),
            need=request_tokens, bias=_bias(best, capacity),
        )  # fmt: skip
        params = at(target)
        tokens = capacity(params)
    cap = failed_cap(tried, params, memory_dim(space))
    if cap is not None and target >= cap:  # as many failed: halfway there (geometrically)
        target = int(dim.clamp(int(math.sqrt(float(seqs) * cap))))
        params = at(target)
    if max(target, seqs) / max(min(target, seqs), 1) <= COMPASS[-1] and waves(
        target, most
    ) == waves(int(seqs), most):
        return None  # already there, to the compass's finest step, in as many waves
    if tokens and "max_model_len" in space and not space["max_model_len"].fixed:
        low = int(space["max_model_len"].low)
        params["max_model_len"] = min(int(params["max_model_len"]), max(low, tokens // 16 * 16))
    why = f"fill: max_num_seqs {seqs} -> {target} ({best.kv_cache_tokens} KV tokens)"
    return Climb(params=params, why=why)


def _bias(best: Tried, capacity: Callable[[Mapping[str, Value]], int | None]) -> int:
    """KV tokens the configuration logged beyond what the memory model predicts for it (the
    model's error there, carried to its neighbours)."""
    predicted = capacity(best.params)
    return (
        0 if predicted is None or best.kv_cache_tokens is None else best.kv_cache_tokens - predicted
    )


def _holds(
    capacity: Callable[[Mapping[str, Value]], int | None],
    at: Callable[[Value], dict[str, Value]],
    *,
    low: int,
    high: int,
    need: int,
    bias: int,
) -> int:
    """The most sequences in ``[low, high]`` whose requests (``need`` tokens each) the KV cache
    predicted for them holds (more sequences leave less memory to the KV cache: CUDA graphs,
    activations), by bisection; ``low`` where none does."""

    def fits(count: int) -> bool:
        tokens = capacity(at(count))
        return tokens is not None and tokens + bias >= count * need

    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def failed_cap(
    tried: Sequence[Tried], params: Mapping[str, Value], memory: Dim | None
) -> int | None:
    """The fewest sequences known to fail for memory at this memory setting: those that failed
    under load or in CUDA-graph capture with less memory, or ran short of KV-cache memory with
    more (as many or more fail here too)."""
    if memory is None or memory.name not in params:
        return None
    here = float(params[memory.name])

    def covers(t: Tried) -> bool:
        level = float(t.params.get(memory.name, -1.0))
        if t.outcome in (*UNDER_LOAD, Outcome.OOM_CUDA_GRAPHS.value):
            return 0 <= level <= here
        return t.outcome in SHORT and level >= here

    return min(
        (int(t.params["max_num_seqs"]) for t in tried if "max_num_seqs" in t.params and covers(t)),
        default=None,
    )


def repair(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
) -> Climb | None:
    """A KV-too-small failure again, with ``max_model_len`` at the length vLLM estimated would
    fit; when the range starts above that length, at the range's low end with the memory
    setting raised to the model's guess of the edge (``expected``; before a boot has logged
    it, vLLM's default). Before anything has served, any such failure; afterwards, the last
    launch when it was a fill or local move (larger batches than the best: worth a length)."""
    if "max_model_len" not in space or space["max_model_len"].fixed:
        return None
    dim, memory = space["max_model_len"], memory_dim(space)
    seen = [dict(t.params) for t in tried]
    candidates = list(reversed(tried))
    if any(t.outcome == Outcome.OK.value for t in tried):
        last = [t for t in tried if t.outcome != Outcome.SKIPPED.value][-1:]
        candidates = [t for t in last if t.source.startswith(("fill", "local"))]
    for t in candidates:
        est = t.estimated_max_model_len
        if t.outcome != Outcome.KV_TOO_SMALL.value or not est or "max_model_len" not in t.params:
            continue
        length = min(max(int(est) // 16 * 16, int(dim.low)), int(dim.high))
        if length >= int(t.params["max_model_len"]):
            continue
        params = dict(t.params) | {"max_model_len": length}
        why = f"repair: max_model_len {length} (vLLM's estimate)"
        if length > int(est) and memory is not None and memory.is_float:
            guess = expected(params) if expected is not None else None
            whose = "vLLM's default" if guess is None else "the guessed edge"
            guess = DEFAULT_UTIL if guess is None else guess
            here = float(params.get(memory.name, memory.low))
            if guess <= here:
                continue
            params[memory.name] = round(min(util_floor(guess), float(memory.high)), 2)
            why = f"repair: max_model_len {length}, {memory.name} {params[memory.name]} ({whose})"
        if params not in seen:
            return Climb(params=params, why=why)
    return None


def prefill(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    prompt_tokens: int,
    request_tokens: int,
    most: int | None = None,
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
    capacity: Callable[[Mapping[str, Value]], int | None] | None = None,
) -> Climb | None:
    """Larger prefill chunks where the prompts waiting at once are long: vLLM's engine step
    takes at most ``max_num_batched_tokens`` of prompt, with its fixed cost, so the prompts of
    the requests admitted together (``max_num_seqs`` of the best, at most ``most`` in flight)
    take their total over that many steps; a one-step change of the batch size gains a few
    percent, below the noise of one run. Where they take ``CHUNKS`` or more steps, one launch
    at the largest batched tokens (doubling, up to that total) whose KV cache the memory model
    predicts to hold what it predicts for the best (what the best logged, where it predicts
    nothing) less one request's tokens, or the requests admitted together where those are
    fewer; the utilization comes down to the model's edge for the larger batches
    (``fit_memory``)."""
    name = "max_num_batched_tokens"
    if name not in space or space[name].fixed or capacity is None or request_tokens <= 0:
        return None
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    memory = memory_dim(space)
    if not ok or memory is None:
        return None
    best = best_of(ok, memory=memory.name)
    here = best.params.get(name)
    seqs = int(best.params.get("max_num_seqs", most or 1))
    admitted = max(min(seqs, most or seqs), 1)  # requests the best runs at once
    wave = prompt_tokens * admitted  # their prompt tokens
    if here is None or best.kv_cache_tokens is None or wave < CHUNKS * float(here):
        return None
    dim = space[name]
    # Prediction against prediction where the model has one for the best (its bias cancels).
    held = capacity(best.params)
    base = best.kv_cache_tokens if held is None else held
    need = min(base - request_tokens, admitted * request_tokens)
    seen = [dict(t.params) for t in tried]
    target, found = float(here) * 2, None
    while target <= float(dim.high) * COMPASS[-1] and target / 2 < wave:
        size = dim.clamp(round(min(target, wave, float(dim.high))))
        params = fit_memory(space, batch_valid(dict(best.params) | {name: size}), expected)
        kv = capacity(params)
        if kv is None or kv < max(need, request_tokens):
            break
        found, target = params, target * 2
    if found is None or found in seen:
        return None
    why = f"prefill: {name} {here} -> {found[name]} ({wave} prompt tokens at once)"
    return Climb(params=found, why=why)


def chunks_bind(*, space: SearchSpace, tried: Sequence[Tried], prompt_tokens: int) -> bool:
    """Larger prefill chunks before more sequences (``prefill`` before ``fill``) where the
    chunks bind, not the batch: the best's running sequences take ``DECODE`` of each engine
    step's ``max_num_batched_tokens`` or more (vLLM schedules one decode token per running
    request first; prompts get what is left, so more sequences would prefill slower still), or
    one prompt takes the best ``CHUNKS`` engine steps or more and more sequences with its other
    settings already served as fast, within ``NOISE`` (neither faster nor slower)."""
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    memory = memory_dim(space)
    if not ok or memory is None:
        return False
    best = best_of(ok, memory=memory.name)
    chunk = best.params.get("max_num_batched_tokens")
    if chunk is None:
        return False
    if (best.peak_running or 0) >= DECODE * float(chunk):
        return True
    if prompt_tokens < CHUNKS * float(chunk):
        return False
    skip = (memory.name, "max_num_seqs")
    rest = {k: v for k, v in best.params.items() if k not in skip}
    same = sorted(
        (t for t in ok if {k: v for k, v in t.params.items() if k not in skip} == rest),
        key=lambda t: int(t.params.get("max_num_seqs", 0)),
    )
    return any(
        int(more.params.get("max_num_seqs", 0)) > int(fewer.params.get("max_num_seqs", 0))
        and abs((more.value or 0.0) - (fewer.value or 0.0)) <= NOISE * (fewer.value or 0.0)
        for i, fewer in enumerate(same)
        for more in same[i + 1 :]
    )
