"""A saturating load generator for an OpenAI-compatible server such as ``vllm serve``.

All requests are sent at once (or ``max_concurrency`` at a time, or at the offsets of an
:class:`~autotune.load.arrivals.Arrivals` process: Poisson, gamma, ramp-up or a trace), streamed,
and timed on the client the way ``vllm bench serve`` times them (:mod:`autotune.load.stream`).
Completion prompts go to ``/v1/completions``, chat messages to ``/v1/chat/completions``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from autotune.load.arrivals import Arrivals
from autotune.load.backlog import LoadState, due_by
from autotune.load.metrics import Metrics, RequestRecord, aggregate
from autotune.load.request import Request
from autotune.load.responses import describe, failed, summarise_errors
from autotune.load.stream import stream_one

__all__ = ["BenchResult", "run", "run_benchmark"]

_POLL_S = 0.2
_MAX_CONSECUTIVE_CONNECTION_ERRORS = 20
# The server is gone (or going): refused, reset or cut-off connections. Read timeouts are not.
_CONNECTION_ERRORS = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)


@dataclass(frozen=True)
class BenchResult:
    """The outcome of one benchmark run."""

    metrics: Metrics
    errors: tuple[str, ...]
    """Distinct error messages, most frequent first, at most 10, e.g. ``"400 Bad input (x3)"``."""
    aborted: str | None
    """Why the run was cut short (engine died, server unreachable, ``"timeout"``), else ``None``."""
    statuses: dict[int, int]
    """How many answers came with each non-200 HTTP status."""
    records: tuple[RequestRecord, ...] = field(default=(), repr=False)
    """Every request as measured, in the order given (like ``--save-detailed``)."""
    started: float = 0.0
    """``time.perf_counter()`` at the start of the run: the origin of ``offsets``."""
    offsets: tuple[float, ...] = field(default=(), repr=False)
    """When each request was due, in seconds after ``started``; () when sent all at once."""


async def run_benchmark(
    *,
    base_url: str,
    model: str,
    requests: Sequence[Request],
    max_concurrency: int | None = None,
    request_rate: float | None = None,
    arrivals: Arrivals | None = None,
    seed: int = 0,
    timeout_s: float = 600.0,
    should_abort: Callable[[], str | None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_chunk: Callable[[], None] | None = None,
    watch: Callable[[LoadState], str | None] | None = None,
    api_key: str | None = None,
) -> BenchResult:
    """Send ``requests`` to the server at ``base_url`` and measure them (with ``api_key``: as
    ``Authorization: Bearer KEY``, what an engine started with ``--api-key`` demands).

    ``should_abort`` is polled about every 0.2 s; when it returns a reason, or when the server
    stops accepting connections, or after ``timeout_s``, the outstanding requests are cancelled
    and counted as failed. ``on_progress(done, total)`` and ``on_record(record)`` are called after
    each finished request, ``on_chunk()`` after each streamed line and while nothing is in flight
    (a stall detector's pulse: the server owes nothing in a paced run's idle gap).
    ``arrivals``: request ``i`` is sent at ``arrivals.offsets(requests, seed=seed)[i]`` (the
    same times in every run), still at most ``max_concurrency`` in flight; ``request_rate`` is
    short for ``Arrivals(rate=request_rate)``. ``watch(state)`` is polled with ``should_abort``
    and may stop the run the same way (a backlog that keeps growing: ``load.saturation``).
    """
    offsets = _pacing(arrivals, request_rate).offsets(requests, seed=seed)
    width = max(1, min(max_concurrency or len(requests), len(requests)))
    slots: list[RequestRecord | None] = [None] * len(requests)
    state = _RunState(total=len(requests), on_progress=on_progress, on_record=on_record)
    state.on_chunk = on_chunk
    state.arrivals = offsets
    semaphore = asyncio.Semaphore(width)
    deadline = time.perf_counter() + timeout_s
    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        limits=httpx.Limits(max_connections=width, max_keepalive_connections=width),
        timeout=httpx.Timeout(timeout_s),
        trust_env=False,  # the server is ours; never route it through an environment proxy
        headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
    ) as client:
        state.started = time.perf_counter()  # the origin of the offsets: the client is ready
        tasks = [
            asyncio.create_task(_send(client, semaphore, model, request, state, slots, i))
            for i, request in enumerate(requests)
        ]
        try:
            aborted = await _supervise(
                tasks, state, should_abort=should_abort, watch=watch, deadline=deadline
            )
        finally:
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome  # a bug in a callback, not a failed request
    now = time.perf_counter()
    records = [slot or failed(now, "cancelled") for slot in slots]
    duration = max((r.start + r.e2e_s for r in records), default=0.0) - min(
        (r.start for r in records), default=0.0
    )
    return BenchResult(
        metrics=aggregate(records, duration_s=duration),
        errors=summarise_errors(records),
        aborted=aborted,
        statuses=dict(Counter(r.status for r in records if r.status and r.status != 200)),
        records=tuple(records),
        started=state.started,
        offsets=tuple(state.arrivals),
    )


def run(
    *,
    base_url: str,
    model: str,
    requests: Sequence[Request],
    max_concurrency: int | None = None,
    request_rate: float | None = None,
    arrivals: Arrivals | None = None,
    seed: int = 0,
    timeout_s: float = 600.0,
    should_abort: Callable[[], str | None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_chunk: Callable[[], None] | None = None,
    watch: Callable[[LoadState], str | None] | None = None,
    api_key: str | None = None,
) -> BenchResult:
    """Synchronous :func:`run_benchmark` (runs its own event loop)."""
    return asyncio.run(
        run_benchmark(
            base_url=base_url,
            model=model,
            requests=requests,
            max_concurrency=max_concurrency,
            timeout_s=timeout_s,
            should_abort=should_abort,
            on_progress=on_progress,
            request_rate=request_rate,
            arrivals=arrivals,
            seed=seed,
            on_record=on_record,
            on_chunk=on_chunk,
            watch=watch,
            api_key=api_key,
        )
    )


def _pacing(arrivals: Arrivals | None, request_rate: float | None) -> Arrivals:
    if arrivals is not None and request_rate is not None:
        raise ValueError("give arrivals or request_rate, not both")
    return arrivals if arrivals is not None else Arrivals(rate=request_rate)


class _RunState:
    """Progress and connection-error streak shared by the request tasks of one run."""

    def __init__(
        self,
        *,
        total: int,
        on_progress: Callable[[int, int], None] | None,
        on_record: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self.total = total
        self.on_record = on_record
        self.on_chunk: Callable[[], None] | None = None
        self.arrivals: list[float] = []
        self.started = time.perf_counter()
        self.done = 0
        self.sent = 0
        self.sorted_offsets: list[float] = []
        self.on_progress = on_progress
        self.connection_errors = 0
        self.threshold = min(_MAX_CONSECUTIVE_CONNECTION_ERRORS, total)
        self.gone: str | None = None

    def snapshot(self) -> LoadState:
        """The counts now (``sorted_offsets`` is filled lazily, once)."""
        if self.arrivals and not self.sorted_offsets:
            self.sorted_offsets = sorted(self.arrivals)
        elapsed = time.perf_counter() - self.started
        return LoadState(
            elapsed_s=elapsed,
            total=self.total,
            due=due_by(self.sorted_offsets, elapsed, total=self.total),
            sent=self.sent,
            finished=self.done,
        )

    def finished(self, record: RequestRecord, *, connection_error: bool) -> None:
        self.done += 1
        self.connection_errors = self.connection_errors + 1 if connection_error else 0
        if self.gone is None and self.threshold and self.connection_errors >= self.threshold:
            self.gone = (
                f"server unreachable: {self.connection_errors} consecutive connection errors"
                f" ({record.error})"
            )
        if self.on_record is not None:
            self.on_record(record)
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


async def _supervise(
    tasks: list[asyncio.Task[None]],
    state: _RunState,
    *,
    should_abort: Callable[[], str | None] | None,
    watch: Callable[[LoadState], str | None] | None = None,
    deadline: float,
) -> str | None:
    """Wait for the tasks; return why the run must stop early, or ``None`` once all are done."""
    pending: set[asyncio.Task[None]] = set(tasks)
    while pending:
        wait_s = min(_POLL_S, max(0.0, deadline - time.perf_counter()))
        _, pending = await asyncio.wait(pending, timeout=wait_s)
        if not pending:
            break
        if state.sent == state.done and state.on_chunk is not None:
            state.on_chunk()  # nothing in flight: a paced run's idle gap is no stall
        reason = state.gone or (should_abort() if should_abort is not None else None)
        if reason is None and watch is not None:
            reason = watch(state.snapshot())
        if reason is None and time.perf_counter() >= deadline:
            reason = "timeout"
        if reason is not None:
            return reason
    return state.gone


async def _send(
    client: httpx.AsyncClient,
    semaphore: asyncio.Semaphore,
    model: str,
    request: Request,
    state: _RunState,
    slots: list[RequestRecord | None],
    index: int,
) -> None:
    """Send one request at its arrival time, when a slot is free, and store its record."""
    if state.arrivals:
        await asyncio.sleep(max(0.0, state.started + state.arrivals[index] - time.perf_counter()))
    async with semaphore:
        start = time.perf_counter()
        if state.gone is not None:
            slots[index] = failed(start, "cancelled")  # the server is gone; don't knock again
            return
        state.sent += 1
        connection_error = False
        try:
            record = await stream_one(client, model, request, start, on_chunk=state.on_chunk)
        except asyncio.CancelledError:
            slots[index] = failed(start, "cancelled")
            raise
        except Exception as exc:  # one broken answer must not end the benchmark
            connection_error = isinstance(exc, _CONNECTION_ERRORS)
            record = failed(start, describe(exc))
        slots[index] = record
        state.finished(record, connection_error=connection_error)
