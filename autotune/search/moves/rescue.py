"""Before anything has served, launch what the memory model rates safest (see
``autotune.search.moves.edge``).

Where the weights leave a sliver of memory (85% of the GPU and more), the configurations that
serve lie in a narrow band: high enough a utilization to hold a KV cache after the profiling
run, low enough to leave room for CUDA graphs and the runtime peak, with small batches. A
sampler's random proposals mostly miss it, and each miss is a launch. ``rescue`` proposes the
smallest batch settings of the range (the least activation and CUDA-graph memory) and the
shortest context, and bisects their utilization: first where the last launch failed (vLLM's
default, in a new study), then between the highest level they ran short of KV-cache memory at
and the lowest they failed at for want of room outside the reservation (CUDA graphs, the
runtime peak, the device's free memory), below the memory model's guess of the startup edge,
skipping candidates the pre-screen knows to fail. Once anything serves, the climb and the
local moves take over from it. Pure: no Optuna.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from autotune.engine.defaults import Value
from autotune.engine.multimodal import IMAGE_DIM
from autotune.engine.outcome import Outcome
from autotune.search.moves.alike import same_batches
from autotune.search.moves.ceiling import largest_chunk
from autotune.search.moves.edge import (
    BATCH_DIMS,
    SHORT,
    Climb,
    Tried,
    batch_valid,
    best_of,
    fit_memory,
    memory_dim,
)
from autotune.search.moves.retreat import UNDER_LOAD
from autotune.search.moves.shrink import NAME, SEQS
from autotune.search.space import UTIL_STEP, SearchSpace

SMALLEST = (*BATCH_DIMS, "max_model_len", IMAGE_DIM)  # set to the low end of their ranges
# Failures of the smallest batches that say the utilization was too high: no room left for
# CUDA graphs or the runtime peak outside the reservation, or more than the device had free.
TOO_HIGH = (
    *UNDER_LOAD,
    Outcome.OOM_CUDA_GRAPHS.value,
    Outcome.FREE_MEMORY.value,
)


def rescue(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
    fails: Callable[[Mapping[str, Value]], str | None] | None = None,
) -> Climb | None:
    """While nothing has served and a launch has failed: the smallest batch settings, first at
    the utilization the last launch failed at (vLLM's default, for a new study), then bisected
    between the levels they ran short of memory at (below) and failed at (above).
    ``fails``: why the pre-screen knows a candidate fails (None: it does not know)."""
    dim = memory_dim(space)
    launched = [t for t in tried if t.outcome != Outcome.SKIPPED.value]
    if dim is None or not dim.is_float or not launched:
        return None
    if any(t.outcome == Outcome.OK.value for t in tried):
        return None
    params = dict(launched[-1].params)
    for name in SMALLEST:
        if name in space and name in params:
            params[name] = space[name].low
    params = batch_valid(params)
    mine = [t for t in launched if same_batches(t.params, params, memory=dim.name)]
    low = max(
        (float(t.params[dim.name]) for t in mine if t.outcome in SHORT),
        default=float(dim.low) - UTIL_STEP,
    )
    high = min(
        (
            float(t.params[dim.name])
            for t in launched
            if (t.outcome in TOO_HIGH and t in mine) or t.outcome == Outcome.FREE_MEMORY.value
        ),
        default=float(dim.high) + UTIL_STEP,
    )
    if expected is not None and (guess := expected(params)) is not None:
        high = min(high, round(guess + UTIL_STEP, 2))
    start = float(launched[-1].params.get(dim.name, dim.high)) if not mine else None
    seen = [dict(t.params) for t in tried]
    for level in _levels(low, high, start):
        candidate = params | {dim.name: level}
        if candidate in seen or (fails is not None and fails(candidate) is not None):
            continue
        why = f"rescue: smallest batches at {dim.name} {level} (nothing served yet)"
        return Climb(params=candidate, why=why)
    return None


def _levels(low: float, high: float, start: float | None) -> list[float]:
    """Utilizations strictly between ``low`` and ``high``: ``start`` first when it is one of
    them, then the middle, then outward from it."""
    steps = round((high - low) / UTIL_STEP)
    inside = [round(low + i * UTIL_STEP, 2) for i in range(1, steps)]
    middle = round(low + (steps // 2) * UTIL_STEP, 2)
    order = sorted(inside, key=lambda u: (abs(u - middle), -u))
    if start is not None and round(start, 2) in inside:
        order.remove(round(start, 2))
        order.insert(0, round(start, 2))
    return order


def starve(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    request_tokens: int,
    most: int,
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
    capacity: Callable[[Mapping[str, Value]], int | None] | None = None,
) -> Climb | None:
    """While nothing has served: the fewest sequences crashed under load at the lowest
    utilization, so the requests they ran need more room outside the KV cache than any
    level leaves, and no fewer sequences are allowed. A smaller KV cache runs fewer of them:
    the largest ``max_num_batched_tokens`` (more activation memory in the profiling run)
    whose KV cache, corrected by the crash's logged KV tokens, holds half the requests that
    ran there (at least one)."""
    memory = memory_dim(space)
    if memory is None or capacity is None or request_tokens <= 0 or NAME not in space:
        return None
    if SEQS not in space or any(t.outcome == Outcome.OK.value for t in tried):
        return None
    floor = [
        t
        for t in tried
        if t.outcome in UNDER_LOAD
        and t.kv_cache_tokens is not None
        and float(t.params.get(memory.name, 1.0)) <= float(memory.low)
        and t.params.get(SEQS) == space[SEQS].low
    ]
    if not floor:
        return None
    last = floor[-1]
    logged = last.kv_cache_tokens or 0
    ran = min(last.peak_running or most, int(last.params[SEQS]), logged // request_tokens)
    predicted = capacity(last.params)
    if ran <= 1 or predicted is None:
        return None
    target = ran // 2
    tokens = target * request_tokens - (logged - predicted)  # in the model's predicted tokens
    top = batch_valid(dict(last.params) | {NAME: space[NAME].high})
    if (capacity(top) or 0) >= tokens + request_tokens:
        return None  # even the largest chunk leaves a cache that holds more
    params = largest_chunk(
        dict(last.params), int(top[NAME]) + 1, int(last.params[NAME]), tokens, capacity
    )
    params = fit_memory(space, params, expected)
    if any(dict(t.params) == params for t in tried):
        return None
    why = (
        f"starve: {NAME} {last.params[NAME]} -> {params[NAME]} (a KV cache for {target} of the "
        f"{ran} requests that crashed under load at {memory.name} {last.params[memory.name]})"
    )
    return Climb(params=params, why=why)


RESTORE = 2.0  # the batched-token step of ``restore``


def restore(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
) -> Climb | None:
    """The rescue's smallest ``max_num_batched_tokens`` is a safe start, not a finding: once the
    best configuration runs at it with more than the fewest sequences (a fill has sized them),
    and nothing with its other settings ran with more batched tokens, try twice as many (the
    utilization down to the model's edge for them). Larger prefill chunks take fewer engine
    steps; whether the memory they cost pays, only a launch can tell. Once per best."""
    name = "max_num_batched_tokens"
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    if name not in space or space[name].fixed or not ok:
        return None
    dim, memory = space[name], memory_dim(space)
    best = best_of(ok, memory=memory.name if memory is not None else "")
    low = best.params.get(name)
    seqs = best.params.get("max_num_seqs")
    if low != dim.low or ("max_num_seqs" in space and seqs == space["max_num_seqs"].low):
        return None
    rest = {k: v for k, v in best.params.items() if k not in (name, getattr(memory, "name", ""))}
    for t in tried:
        if all(t.params.get(k) == v for k, v in rest.items()) and t.params.get(name, low) > low:
            return None  # the batched tokens were moved from here before
    params = fit_memory(space, dict(best.params) | {name: dim.clamp(low * RESTORE)}, expected)
    if any(dict(t.params) == params for t in tried):
        return None
    return Climb(params=params, why=f"restore: {name} {low} -> {params[name]} (rescue's minimum)")
