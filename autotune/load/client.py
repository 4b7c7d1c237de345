"""A saturating load generator for an OpenAI-compatible server such as ``vllm serve``.

All requests are sent at once (or ``max_concurrency`` at a time, or as Poisson arrivals at
``request_rate`` per second), streamed, and timed on the client the way ``vllm bench serve``
times them (see :mod:`autotune.load.metrics`). Completion prompts go to ``/v1/completions``, chat
messages to ``/v1/chat/completions``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from autotune.load.arrivals import arrivals
from autotune.load.metrics import Metrics, RequestRecord, aggregate
from autotune.load.request import Request
from autotune.load.responses import (
    describe,
    error_message,
    event_error,
    failed,
    has_content,
    summarise_errors,
)

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


async def run_benchmark(
    *,
    base_url: str,
    model: str,
    requests: Sequence[Request],
    max_concurrency: int | None = None,
    request_rate: float | None = None,
    seed: int = 0,
    timeout_s: float = 600.0,
    should_abort: Callable[[], str | None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_chunk: Callable[[], None] | None = None,
    api_key: str | None = None,
) -> BenchResult:
    """Send ``requests`` to the server at ``base_url`` and measure them (with ``api_key``: as
    ``Authorization: Bearer KEY``, what an engine started with ``--api-key`` demands).

    ``should_abort`` is polled about every 0.2 s; when it returns a reason, or when the server
    stops accepting connections, or after ``timeout_s``, the outstanding requests are cancelled
    and counted as failed. ``on_progress(done, total)`` and ``on_record(record)`` are called after
    each finished request, ``on_chunk()`` after each streamed line (a stall detector's pulse).
    ``request_rate``: request ``i`` is sent at the ``i``-th arrival of a
    Poisson process (seeded, the same times in every run), still at most ``max_concurrency``.
    """
    width = max(1, min(max_concurrency or len(requests), len(requests)))
    slots: list[RequestRecord | None] = [None] * len(requests)
    state = _RunState(total=len(requests), on_progress=on_progress, on_record=on_record)
    state.on_chunk = on_chunk
    state.arrivals = arrivals(len(requests), rate=request_rate, seed=seed)
    semaphore = asyncio.Semaphore(width)
    deadline = time.perf_counter() + timeout_s
    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        limits=httpx.Limits(max_connections=width, max_keepalive_connections=width),
        timeout=httpx.Timeout(timeout_s),
        trust_env=False,  # the server is ours; never route it through an environment proxy
        headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
    ) as client:
        tasks = [
            asyncio.create_task(_send(client, semaphore, model, request, state, slots, i))
            for i, request in enumerate(requests)
        ]
        try:
            aborted = await _supervise(tasks, state, should_abort=should_abort, deadline=deadline)
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
    )


def run(
    *,
    base_url: str,
    model: str,
    requests: Sequence[Request],
    max_concurrency: int | None = None,
    request_rate: float | None = None,
    seed: int = 0,
    timeout_s: float = 600.0,
    should_abort: Callable[[], str | None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_chunk: Callable[[], None] | None = None,
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
            seed=seed,
            on_record=on_record,
            on_chunk=on_chunk,
            api_key=api_key,
        )
    )


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
        self.on_progress = on_progress
        self.connection_errors = 0
        self.threshold = min(_MAX_CONSECUTIVE_CONNECTION_ERRORS, total)
        self.gone: str | None = None

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
    deadline: float,
) -> str | None:
    """Wait for the tasks; return why the run must stop early, or ``None`` once all are done."""
    pending: set[asyncio.Task[None]] = set(tasks)
    while pending:
        wait_s = min(_POLL_S, max(0.0, deadline - time.perf_counter()))
        _, pending = await asyncio.wait(pending, timeout=wait_s)
        if not pending:
            break
        reason = state.gone or (should_abort() if should_abort is not None else None)
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
        connection_error = False
        try:
            record = await _stream(client, model, request, start, on_chunk=state.on_chunk)
        except asyncio.CancelledError:
            slots[index] = failed(start, "cancelled")
            raise
        except Exception as exc:  # one broken answer must not end the benchmark
            connection_error = isinstance(exc, _CONNECTION_ERRORS)
            record = failed(start, describe(exc))
        slots[index] = record
        state.finished(record, connection_error=connection_error)


async def _stream(
    client: httpx.AsyncClient,
    model: str,
    request: Request,
    start: float,
    *,
    on_chunk: Callable[[], None] | None = None,
) -> RequestRecord:
    """POST one streaming request and time its chunks."""
    payload: dict[str, object] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": request.ignore_eos,
        "temperature": 0,
    }
    if request.messages is not None:
        path = "/v1/chat/completions"
        payload.update(messages=request.messages, max_completion_tokens=request.max_tokens)
    else:
        path = "/v1/completions"
        payload.update(prompt=request.prompt, max_tokens=request.max_tokens)
    ttft: float | None = None
    itls: list[float] = []
    last = start
    chunks = 0
    usage: dict[str, object] = {}
    done = False
    error: str | None = None
    async with client.stream("POST", path, json=payload) as response:
        if response.status_code != 200:
            body = await response.aread()
            message = f"{response.status_code} {error_message(body)}"
            return failed(start, message, status=response.status_code)
        async for line in response.aiter_lines():
            if on_chunk is not None:
                on_chunk()
            if not line.startswith("data:") or error is not None:
                continue  # read to the end so the connection can be reused
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                continue
            event = json.loads(data)
            if not isinstance(event, dict):
                continue
            error = event_error(event)
            if has_content(event):
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - start
                else:
                    itls.append(now - last)
                last = now
                chunks += 1
            reported = event.get("usage")
            if isinstance(reported, dict):
                usage = reported
    end = time.perf_counter()
    if error is None and not done:
        error = "stream ended before [DONE]"
    prompt_tokens = usage.get("prompt_tokens")
    output_tokens = usage.get("completion_tokens")
    return RequestRecord(
        ok=error is None,
        prompt_tokens=prompt_tokens
        if isinstance(prompt_tokens, int)
        else (len(request.prompt) if isinstance(request.prompt, list) else 0),
        output_tokens=output_tokens if isinstance(output_tokens, int) else chunks,
        start=start,
        ttft_s=ttft,
        itls_s=tuple(itls),
        e2e_s=(end if ttft is None else last) - start,  # to the last token, as vLLM's bench
        error=error,
        status=200,
    )
