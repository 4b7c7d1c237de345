"""What a running engine shows besides its answers: ``/metrics`` and GPU memory (NVML).

All are best effort: a probe that cannot read returns ``None``, never fails a trial.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import httpx

from autotune.hardware import gpu_memory_used_bytes
from autotune.units import GIB

# vLLM's Prometheus names (``vllm/v1/metrics/loggers.py``); counters carry ``_total``.
PREEMPTIONS = ("vllm:num_preemptions_total", "vllm:num_preemptions")
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # 0-1; the 2nd before 0.11
WAITING = ("vllm:num_requests_waiting",)
RUNNING = ("vllm:num_requests_running",)
# in tokens: prompt tokens looked up in the prefix cache, and of those the tokens found cached
PREFIX_QUERIES = ("vllm:prefix_cache_queries_total",)
PREFIX_HITS = ("vllm:prefix_cache_hits_total",)
_SAMPLE = re.compile(
    r'^(?P<name>[A-Za-z_:][\w:]*)(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?[ \t]+(?P<value>\S+)', re.M
)
SCRAPE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class EngineStats:
    """One read of vLLM's ``/metrics``, summed over its engines (None: not exposed)."""

    preemptions: int | None = None  # vllm:num_preemptions_total
    kv_cache_usage: float | None = None  # 0-1, the fullest engine's KV cache
    requests_waiting: int | None = None
    requests_running: int | None = None
    prefix_cache_queries: float | None = None  # vllm:prefix_cache_queries_total (tokens)
    prefix_cache_hits: float | None = None  # vllm:prefix_cache_hits_total (tokens)


def parse_metrics(text: str) -> EngineStats:
    """The numbers a tuner reads from Prometheus text (``vllm:kv_cache_usage_perc``, or
    ``vllm:gpu_cache_usage_perc`` of older vLLM)."""
    samples: dict[str, list[float]] = {}
    for m in _SAMPLE.finditer(text):
        try:
            value = float(m.group("value"))
        except ValueError:
            continue
        if math.isfinite(value):
            samples.setdefault(m.group("name"), []).append(value)

    def first(names: tuple[str, ...]) -> list[float] | None:
        return next((samples[n] for n in names if n in samples), None)

    def total(names: tuple[str, ...]) -> int | None:
        found = first(names)
        return None if found is None else int(sum(found))

    def summed(names: tuple[str, ...]) -> float | None:
        found = first(names)
        return None if found is None else float(sum(found))

    usage = first(KV_USAGE)
    return EngineStats(
        preemptions=total(PREEMPTIONS),
        kv_cache_usage=None if usage is None else min(max(max(usage), 0.0), 1.0),
        requests_waiting=total(WAITING),
        requests_running=total(RUNNING),
        prefix_cache_queries=summed(PREFIX_QUERIES),
        prefix_cache_hits=summed(PREFIX_HITS),
    )


def scrape(
    base_url: str, *, client: httpx.Client | None = None, timeout_s: float = SCRAPE_TIMEOUT_S
) -> EngineStats | None:
    """``/metrics`` read and parsed, or None when it cannot be read."""
    url = base_url.rstrip("/") + "/metrics"
    try:
        if client is not None:
            response = client.get(url, timeout=timeout_s)
        else:
            response = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError:
        return None
    return parse_metrics(response.text) if response.status_code == 200 else None


def preemptions(base_url: str) -> int | None:
    """``vllm:num_preemptions_total`` summed over engines, or None when ``/metrics`` is unread."""
    stats = scrape(base_url)
    return None if stats is None else stats.preemptions


def prefix_cache_counts(base_url: str) -> tuple[float, float] | None:
    """(queries, hits) of vLLM's prefix cache in tokens, summed over engines; None when
    ``/metrics`` is unread or lacks either counter."""
    stats = scrape(base_url)
    if stats is None or stats.prefix_cache_queries is None or stats.prefix_cache_hits is None:
        return None
    return stats.prefix_cache_queries, stats.prefix_cache_hits


def hit_rate(
    *, before: tuple[float, float] | None, after: tuple[float, float] | None
) -> float | None:
    """Prefix-cache hits / queries between two reads; None when either is missing or nothing
    was looked up in between."""
    if before is None or after is None:
        return None
    queries, hits = after[0] - before[0], after[1] - before[1]
    if queries <= 0:
        return None
    return round(min(max(hits / queries, 0.0), 1.0), 4)


class PeakLoad:
    """Polls ``/metrics`` every ``interval_s`` while it is entered (from a background thread,
    stopped and joined on exit): the peak KV-cache usage and the most requests waiting and
    running. Each is None when no read showed it (``/metrics`` unreadable)."""

    def __init__(self, base_url: str, *, interval_s: float = 0.5, timeout_s: float = 2.0) -> None:
        self.base_url, self.interval_s, self.timeout_s = base_url, interval_s, timeout_s
        self.samples = 0  # successful reads
        self.kv_cache_usage: float | None = None
        self.requests_waiting: int | None = None
        self.requests_running: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def kv_cache_usage_pct(self) -> float | None:
        """The peak KV-cache usage in percent (0-100)."""
        return None if self.kv_cache_usage is None else round(100 * self.kv_cache_usage, 1)

    def add(self, stats: EngineStats) -> None:
        """One read's numbers into the peaks."""
        self.samples += 1
        self.kv_cache_usage = _most(self.kv_cache_usage, stats.kv_cache_usage)
        self.requests_waiting = _most(self.requests_waiting, stats.requests_waiting)
        self.requests_running = _most(self.requests_running, stats.requests_running)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                stats = scrape(self.base_url, client=client, timeout_s=self.timeout_s)
                if stats is not None:
                    self.add(stats)
                self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakLoad:
        self._thread = threading.Thread(target=self._run, name="peak-load", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:  # a read in flight ends within its timeout
            self._thread.join(timeout=self.timeout_s * 4 + 1)
            self._thread = None


_N = TypeVar("_N", int, float)


def _most(seen: _N | None, new: _N | None) -> _N | None:
    if new is None:
        return seen
    return new if seen is None else max(seen, new)


class PeakMemory:
    """Samples the GPU memory in use (NVML) while it is entered; ``peak_gib`` is None without
    NVML (no NVIDIA driver, or the fake engine)."""

    def __init__(self, *, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def peak_gib(self) -> float | None:
        return None if self.peak_bytes is None else round(self.peak_bytes / GIB, 2)

    @property
    def source(self) -> str:
        return "NVML" if self.peak_bytes is not None else "unavailable (no NVML)"

    def _sample(self) -> bool:
        used = gpu_memory_used_bytes()
        if used is None:
            return False
        self.peak_bytes = max(self.peak_bytes or 0, used)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s) and self._sample():
            pass

    def __enter__(self) -> PeakMemory:
        if self._sample():  # no NVML: no thread
            self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
