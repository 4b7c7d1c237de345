"""Launches that ran alike (see ``autotune.search.moves.edge``): the same settings but the memory
one, a KV cache that never bound and the same peak of requests running. vLLM's scheduler made
the same choices in each, so their throughputs differ by the machine's noise alone: the guide
(``guide.tried``), the re-check (``recheck``) and the choice (``search.ranking``) pool their
runs. Pure: no Optuna."""

from __future__ import annotations

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
