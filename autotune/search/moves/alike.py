"""Launches that ran alike (see ``autotune.search.moves.edge``): the same settings but the memory
one, a KV cache that never bound and the same peak of requests running. vLLM's scheduler made
the same choices in each, so their throughputs differ by the machine's noise alone: the guide
(``seen.tried``), the re-check (``recheck``) and the choice (``search.ranking``) pool their
runs. And launches whose extra memory was put to use (``put_to_use``): the same settings, a KV
cache that bound the one with less memory, and more requests running or fewer preemptions
with more; the guide, the re-check and the choice (``search.best``) take the one with more
memory to be at least as fast. Pure: no Optuna."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from autotune.engine.defaults import Value
from autotune.engine.outcome import Outcome
from autotune.search.moves.edge import Tried, kv_full
from autotune.trial.record import TrialRecord


def tried_alike(t: Tried, *, memory: str) -> str | None:
    """``ran_alike`` of a trial as the guide sees it."""
    return ran_alike(
        t.params,
        memory=memory,
        running=t.peak_running,
        kv_pct=t.peak_kv_pct,
        full=t.kv_pressure() == "full",
    )


def record_bound(r: TrialRecord) -> bool:
    """vLLM's counters said the KV cache bound this launch's benchmark (``kv_full``)."""
    seqs = (r.params or {}).get("max_num_seqs")
    return kv_full(
        preemptions=r.preemptions,
        peak_kv_pct=r.peak_kv_cache_usage_pct,
        admitted=r.peak_requests_running,
        waiting=r.peak_requests_waiting,
        seqs=None if seqs is None else int(seqs),
    )


def record_alike(r: TrialRecord, *, memory: str) -> str | None:
    """``ran_alike`` of a launch that served (None for one that did not)."""
    if not r.ok or r.params is None:
        return None
    return ran_alike(
        r.params,
        memory=memory,
        running=r.peak_requests_running,
        kv_pct=r.peak_kv_cache_usage_pct,
        full=record_bound(r),
    )


def runs_alike(records: Iterable[TrialRecord], *, memory: str) -> str | None:
    """The one class of launches that every run of a configuration ran alike with, if any."""
    keys = {record_alike(r, memory=memory) for r in records}
    return keys.pop() if len(keys) == 1 and None not in keys else None


def ran_alike(
    params: Mapping[str, Value],
    *,
    memory: str,
    running: int | None,
    kv_pct: float | None,
    full: bool,
) -> str | None:
    """Launches with equal keys ran alike: the same settings but the memory one, a KV cache
    that never bound (``full`` false: no preemptions, never full, nobody kept waiting below
    ``max_num_seqs``) and the same peak of requests running. vLLM's scheduler then made the
    same choices in each, and the memory setting only sized a KV cache none of them filled:
    their throughputs differ by the machine's noise alone. None: vLLM's counters did not say
    (or said the cache bound)."""
    if running is None or kv_pct is None or full:
        return None
    rest = sorted((k, str(v)) for k, v in params.items() if k != memory)
    return f"{rest} running {running}"


def memory_unused(tried: Sequence[Tried], *, memory: str, of: Tried) -> bool:
    """``of`` ran alike with a launch of its batch settings at another memory setting: the
    extra memory sized a KV cache nobody filled, and more would again (the climb stops)."""
    key = tried_alike(of, memory=memory)
    if key is None:
        return False
    levels = {
        t.params.get(memory)
        for t in tried
        if t.outcome == Outcome.OK.value and tried_alike(t, memory=memory) == key
    }
    return len(levels) >= 2


def put_to_use(more: Tried, less: Tried, *, memory: str) -> bool:
    """``more`` is ``less``'s batch settings with more memory, and vLLM's counters say the extra
    memory was put to use: the KV cache bound ``less`` (``kv_full``), and ``more`` ran more
    requests at once without preempting more often, or preempted fewer (``used``). With the same
    batch settings a larger KV cache then serves at least as fast, whatever one noisy run of
    each says."""
    if not more_memory(more.params, less.params, memory=memory):
        return False
    return used(
        [(more.peak_running, more.preemptions)],
        [(less.peak_running, less.preemptions)],
        bound=less.kv_pressure() == "full",
    )


def records_put_to_use(
    more: Sequence[TrialRecord], less: Sequence[TrialRecord], *, memory: str
) -> bool:
    """``put_to_use`` of every run of two configurations."""
    if not more or not less or more[0].params is None or less[0].params is None:
        return False
    if not more_memory(more[0].params, less[0].params, memory=memory):
        return False
    return used(
        [(r.peak_requests_running, r.preemptions) for r in more],
        [(r.peak_requests_running, r.preemptions) for r in less],
        bound=all(record_bound(r) for r in less),
    )


Counters = tuple[int | None, int | None]  # a run's peak of requests running, its preemptions


def used(more: Sequence[Counters], less: Sequence[Counters], *, bound: bool) -> bool:
    """Every run of one configuration did better by vLLM's counters than every run of another,
    whose KV cache bound (``bound``): more requests running at its peak with no more preemptions
    per request running (long requests preempted cost their whole prefill again), or fewer
    preemptions with at least as many running."""
    if not bound or not more or not less:
        return False
    if not all(r is not None and p is not None for r, p in (*more, *less)):
        return False
    runs = [(int(r or 0), int(p or 0)) for r, p in more]
    others = [(int(r or 0), int(p or 0)) for r, p in less]
    most, least = max(r for r, _ in others), min(r for r, _ in runs)
    rate = max(p / max(r, 1) for r, p in runs) <= min(p / max(r, 1) for r, p in others)
    fewer = max(p for _, p in runs) < min(p for _, p in others)
    return (least > most and rate) or (least >= most and fewer)


def more_memory(a: Mapping[str, Value], b: Mapping[str, Value], *, memory: str) -> bool:
    """``a`` is ``b``'s batch settings with more memory."""
    return same_batches(a, b, memory=memory) and float(a.get(memory, 0)) > float(b.get(memory, 0))


def same_batches(a: Mapping[str, Value], b: Mapping[str, Value], *, memory: str) -> bool:
    """The same settings but the memory one."""
    return {k: v for k, v in a.items() if k != memory} == {
        k: v for k, v in b.items() if k != memory
    }


def credit_used(tried: Sequence[Tried], *, memory: str) -> list[Tried]:
    """Each served configuration valued at least as high as those it ``put_to_use`` more memory
    than (most memory last, so the credit passes up a chain of them)."""
    ok = sorted(
        (i for i, t in enumerate(tried) if t.outcome == Outcome.OK.value and t.value is not None),
        key=lambda i: float(tried[i].params.get(memory, 0)),
    )
    out = list(tried)
    for i in ok:
        below = [out[j].value or 0.0 for j in ok if put_to_use(out[i], out[j], memory=memory)]
        if below and max(below) > (out[i].value or 0.0):
            out[i] = dataclasses.replace(out[i], value=max(below))
    return out
