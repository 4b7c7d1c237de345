"""Climb to the memory edge: the best throughput sits at the highest memory setting that still
starts and survives its load (more KV cache never slows vLLM down; the cliffs above it are
free-memory, CUDA-graph and under-load failures). A sampler finds the region but wastes launches
on the last steps of a one-sided cliff, so the study bisects them itself: the best trial's
configuration, one memory setting between its own and the lowest one known to fail above it.

Pure: no Optuna. ``search.moves.guide`` turns trials into ``Tried`` and enqueues what ``next_climb``
proposes (source ``edge``), so the climb is visible in ``autotune trials``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from autotune.engine.defaults import Value
from autotune.engine.multimodal import IMAGE_DIM
from autotune.engine.outcome import Outcome
from autotune.search.space import MEMORY_DIMS, UTIL_STEP, Dim, SearchSpace

# Failures that a higher memory setting with at least as large batches cannot escape.
_ABOVE = {
    Outcome.FREE_MEMORY.value,
    Outcome.OOM_CUDA_GRAPHS.value,
    Outcome.CRASH_UNDER_LOAD.value,
}
# ... and those the climb treats as a ceiling for every configuration: the free memory is the
# device's; a crash under load depends on the load as much as on the batch settings.
_ANYWHERE = {Outcome.FREE_MEMORY.value, Outcome.CRASH_UNDER_LOAD.value}
SHORT = (Outcome.NO_KV_CACHE.value, Outcome.KV_TOO_SMALL.value)  # too little memory at startup
LOG_RESOLUTION = 1.125  # a byte-sized memory dimension is bisected down to this ratio
BATCH_DIMS = ("max_num_seqs", "max_num_batched_tokens")
SIZES = (*BATCH_DIMS, "max_model_len", IMAGE_DIM)  # more of these needs more memory
TIE = 0.01  # results this close count as equal when choosing where to move from
NOISE = 0.05  # a slower result with more memory beyond this share breaks monotonicity
COMPASS = (2.0, 2.0**0.5, 2.0**0.25, 2.0**0.125)  # local move factors, boldest first
KV_FULL = 95.0  # peak KV-cache usage (%) that counts as a full cache
KV_IDLE = 50.0  # ... and as an idle one
KV_TIGHT = 90.0  # ... and as one that more memory would let hold more (near its limit)
FEWER = 0.1  # a configuration holding this share fewer running tokens escapes a crash under load


@dataclass(frozen=True)
class Tried:
    """A trial as the climb sees it: its sampled parameters, how it ended, its value."""

    params: Mapping[str, Value]
    outcome: str  # Outcome value; a pre-screened candidate: the class it was predicted to hit
    value: float | None = None
    estimated_max_model_len: int | None = None  # a KV-too-small failure's own estimate
    kv_cache_tokens: int | None = None  # "GPU KV cache size: N tokens" of a boot
    source: str = ""  # who proposed it: "" (the sampler), "fill: …", "local: …", …
    preemptions: int | None = None  # vllm:num_preemptions_total during its benchmark
    peak_kv_pct: float | None = None  # vllm:kv_cache_usage_perc at its peak, in percent
    peak_running: int | None = None  # vllm:num_requests_running at its peak
    peak_waiting: int | None = None  # vllm:num_requests_waiting at its peak

    def kv_pressure(self) -> str | None:
        """What vLLM's own counters said of its KV cache under the benchmark: ``"full"``
        (preemptions, the cache at its limit, or requests kept waiting below
        ``max_num_seqs``), ``"idle"`` (never half used), else None."""
        seqs = self.params.get("max_num_seqs")
        if kv_full(
            preemptions=self.preemptions,
            peak_kv_pct=self.peak_kv_pct,
            admitted=self.peak_running,
            waiting=self.peak_waiting,
            seqs=int(seqs) if seqs is not None else None,
        ):
            return "full"
        if self.peak_kv_pct is not None and self.peak_kv_pct < KV_IDLE:
            return "idle"
        return None


def kv_full(
    *,
    preemptions: int | None,
    peak_kv_pct: float | None,
    admitted: int | None = None,
    waiting: int | None = None,
    seqs: int | None = None,
) -> bool:
    """vLLM's counters say the KV cache bound a benchmark: preemptions; or fewer than
    ``max_num_seqs`` ran at the peak (``admitted``) with usage at its limit, or with the cache
    at least half used while more requests waited at once than ever ran (the scheduler admits
    a request only when its blocks fit). All sequences running is the batch's limit, not the
    cache's; a few waiting at a time is the scheduler's step, not a full cache."""
    short = admitted is None or seqs is None or admitted < seqs
    if bool(preemptions) or (short and peak_kv_pct is not None and peak_kv_pct >= KV_FULL):
        return True
    return bool(
        waiting
        and admitted is not None
        and admitted < min(seqs or 0, waiting)
        and (peak_kv_pct or 0.0) >= KV_IDLE
    )


@dataclass(frozen=True)
class Climb:
    params: dict[str, Value]
    why: str


def memory_dim(space: SearchSpace) -> Dim | None:
    """The tuned memory dimension (utilization on GPUs, KV bytes on CPUs), if any."""
    return next((d for d in space.tuned if d.name in MEMORY_DIMS), None)


def covers(failed: Mapping[str, Value], best: Mapping[str, Value], *, memory: str) -> bool:
    """The best configuration needs at least what the failed one needed, memory aside (sizes at
    least as large; any other setting, such as an opt-in switch, the same)."""
    return all(
        best.get(k, v) >= v if k in SIZES else best.get(k, v) == v
        for k, v in failed.items()
        if k != memory
    )


def more_memory_helps(
    tried: Sequence[Tried], *, memory: str, near: Mapping[str, Value] | None = None
) -> bool:
    """False once a configuration served slower with more memory (beyond ``NOISE``) than with
    less: the landscape is not monotone there. ``near``: only that configuration's own batch
    settings count (the climb tests its own); otherwise any (the lift, which cannot test)."""
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    if near is not None:
        mine = {k: v for k, v in near.items() if k != memory}
        ok = [t for t in ok if {k: v for k, v in t.params.items() if k != memory} == mine]
    for a in ok:
        for b in ok:
            same = {k: v for k, v in a.params.items() if k != memory} == {
                k: v for k, v in b.params.items() if k != memory
            }
            more = a.params.get(memory, 0) > b.params.get(memory, 0)
            if same and more and (a.value or 0.0) < (b.value or 0.0) * (1.0 - NOISE):
                return False
    return True


def best_of(ok: Sequence[Tried], *, memory: str) -> Tried:
    """The best served trial; among those within ``TIE`` of it, the one with the most memory
    (equal throughput at more memory: its KV cache has room the batch settings do not use)."""
    top = max(t.value or 0.0 for t in ok)
    near = [t for t in ok if (t.value or 0.0) >= top * (1.0 - TIE)]
    return max(near, key=lambda t: (float(t.params.get(memory, 0)), t.value or 0.0))


def between(dim: Dim, low: Value, high: Value) -> Value | None:
    """A point strictly between ``low`` (works) and ``high`` (fails), or None if none is left."""
    if dim.is_float:
        steps = round((float(high) - float(low)) / UTIL_STEP)
        if steps <= 1:
            return None
        return round(float(low) + (steps // 2) * UTIL_STEP, 2)
    if high / low <= LOG_RESOLUTION:
        return None
    return int(math.sqrt(float(low) * float(high)))


def next_climb(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
    running: Callable[[Mapping[str, Value]], int | None] | None = None,
) -> Climb | None:
    """The next point on the way to the best configuration's memory edge, or None when the
    edge is known to the dimension's resolution (or there is nothing to climb). ``expected``:
    the memory model's guess of the edge for a configuration; the climb aims there first and
    bisects when the guess is outside what the launches left open. ``running``: the most
    tokens a configuration can hold running (its KV cache, or all its sequences at full
    length if fewer); a crash under load is no ceiling for batch settings that hold clearly
    fewer at its level (``_runs_fewer``)."""
    dim = memory_dim(space)
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    if dim is None or not ok:
        return None
    best = best_of(ok, memory=dim.name)
    if not more_memory_helps(tried, memory=dim.name, near=best.params):
        return None
    if best.kv_pressure() == "idle" and not _batches_short(tried, best, memory=dim.name):
        return None  # its batches never used half its KV cache: larger batches first (fill)
    here = best.params.get(dim.name)
    if here is None or here >= dim.high:
        return None
    above = [
        t
        for t in tried
        if t.outcome in _ABOVE
        and dim.name in t.params
        and t.params[dim.name] > here
        and (t.outcome in _ANYWHERE or covers(t.params, best.params, memory=dim.name))
    ]
    escaped = [t for t in above if _runs_fewer(best, t, memory=dim.name, running=running)]
    fails = [t.params[dim.name] for t in above if t not in escaped]
    ceiling: Value = min(fails, default=None) or _beyond(dim)
    target = between(dim, here, ceiling)
    if target is None:
        return None
    guess = expected(best.params) if expected is not None and dim.is_float else None
    if guess is not None and util_floor(guess) < float(ceiling):
        # Aim at the guess; once a launch failed at or below it, bisect (the guess is of the
        # startup edge; failures under load sit below it).
        target = round(max(util_floor(guess), float(here) + UTIL_STEP), 2)
    # A crash the best's batches escape (``_runs_fewer``) is no ceiling, but the climb goes no
    # further than its level before a launch there served.
    target = min(target, dim.high, *(t.params[dim.name] for t in escaped))
    params = dict(best.params) | {dim.name: target}
    if any(dict(t.params) == params for t in tried):
        return None  # already tried (or pre-screened): the sampler takes over
    limit = f"{ceiling} fails" if fails else f"up to {dim.high}"
    return Climb(params=params, why=f"edge: {dim.name} {here} works, {limit}")


def _runs_fewer(
    best: Tried,
    failed: Tried,
    *,
    memory: str,
    running: Callable[[Mapping[str, Value]], int | None] | None,
) -> bool:
    """``best``'s batch settings at ``failed``'s memory level hold clearly fewer running tokens
    than ``failed`` did when it crashed under load. The runtime peak beyond vLLM's profile grows
    with the tokens running, and those are bounded by the KV cache and the sequences: larger
    batched tokens (more activation memory profiled, a smaller KV cache) can serve where the
    crash's batches did not, and so can fewer sequences where the best's KV cache was tight
    (``KV_TIGHT`` used at the peak, or preemptions; else the memory would go unused)."""
    if failed.outcome != Outcome.CRASH_UNDER_LOAD.value or running is None:
        return False
    params, seqs = best.params, "max_num_seqs"
    fewer = seqs in failed.params and int(params.get(seqs, 0)) < int(failed.params[seqs])
    tight = bool(best.preemptions) or (best.peak_kv_pct or 0.0) >= KV_TIGHT
    if fewer and not tight:
        return False
    mine = running(dict(params) | {memory: failed.params[memory]})
    theirs = running(failed.params)
    return mine is not None and theirs is not None and mine < theirs * (1.0 - FEWER)


def _batches_short(tried: Sequence[Tried], best: Tried, *, memory: str) -> bool:
    """Larger batches than the best's ran (or were predicted to run) short of KV-cache memory
    at its memory setting or above: memory, not the KV cache's use, bounds the batches."""
    here = best.params.get(memory, 0)
    return any(
        t.outcome in SHORT
        and t.params.get(memory, 0) >= here
        and any(t.params.get(k, 0) > best.params.get(k, 0) for k in BATCH_DIMS)
        for t in tried
    )


def _beyond(dim: Dim) -> Value:
    """One resolution step above the range: the top of the range itself is a candidate."""
    if dim.is_float:
        return round(float(dim.high) + UTIL_STEP, 2)
    return int(float(dim.high) * LOG_RESOLUTION) + 1


def lift(
    *, space: SearchSpace, tried: Sequence[Tried], params: Mapping[str, Value]
) -> dict[str, Value]:
    """``params`` with the memory setting raised to the highest one a configuration needing at
    least as much (memory aside) has served at: known to work, and never slower."""
    dim = memory_dim(space)
    out = dict(params)
    if dim is None or dim.name not in out or not more_memory_helps(tried, memory=dim.name):
        return out
    served = [
        t.params[dim.name]
        for t in tried
        if t.outcome == Outcome.OK.value
        and dim.name in t.params
        and covers(params, t.params, memory=dim.name)
    ]
    if served and max(served) > out[dim.name]:
        out[dim.name] = max(served)
    return out


def fit_memory(
    space: SearchSpace,
    params: dict[str, Value],
    expected: Callable[[Mapping[str, Value]], float | None] | None,
) -> dict[str, Value]:
    """Larger batches need more CUDA-graph and activation memory: a utilization above the
    model's guess of the edge for ``params`` comes down to it (never up: the climb does that)."""
    dim = memory_dim(space)
    if dim is None or not dim.is_float or expected is None or dim.name not in params:
        return params
    guess = expected(params)
    if guess is not None and util_floor(guess) < float(params[dim.name]):
        params[dim.name] = max(util_floor(guess), float(dim.low))
    return params


def batch_valid(params: dict[str, Value]) -> dict[str, Value]:
    if "max_num_seqs" in params and "max_num_batched_tokens" in params:
        params["max_num_batched_tokens"] = max(
            params["max_num_batched_tokens"], params["max_num_seqs"]
        )
    return params


def util_floor(value: float) -> float:
    return round(math.floor(round(value / UTIL_STEP, 6)) * UTIL_STEP, 2)
