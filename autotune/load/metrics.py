"""Benchmark metrics, defined as ``vllm bench serve`` defines them so the numbers compare.

* TTFT: time from sending a request to its first streamed chunk with text.
* E2E: time from sending a request to its last chunk with text.
* TPOT per request: ``(e2e - ttft) / (output_tokens - 1)``, for requests with more than one token.
* ITL: every gap between consecutive content chunks, pooled over all requests.
* Throughput: totals divided by the benchmark duration (first request start to last finish).

Failed requests count in ``failed`` only; the latency and token statistics use completed ones.
Percentiles interpolate linearly between the closest ranks (numpy's default). A statistic with no
data is 0.0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autotune.errors import UserError

__all__ = ["Metrics", "RequestRecord", "aggregate", "goodput", "percentile"]


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client measured it."""

    ok: bool
    prompt_tokens: int
    """From the server's ``usage`` field."""
    output_tokens: int
    """From ``usage`` (or the number of content chunks if the server sent none)."""
    start: float
    """``time.perf_counter()`` when the request was sent."""
    ttft_s: float | None
    itls_s: tuple[float, ...]
    """Gaps between the streamed content chunks after the first."""
    e2e_s: float
    """Until the last content chunk (or the end of the answer if there was none)."""
    error: str | None
    """The server's message or the exception, short; ``None`` if ok."""
    status: int | None
    """The HTTP status, if an answer came."""


@dataclass(frozen=True)
class Metrics:
    """Aggregate results of one benchmark run; latencies in milliseconds."""

    duration_s: float
    completed: int
    failed: int
    input_tokens: int
    output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    ttft_ms_p50: float
    ttft_ms_p95: float
    ttft_ms_p99: float
    tpot_ms_p50: float
    tpot_ms_p95: float
    tpot_ms_p99: float
    itl_ms_p50: float
    itl_ms_p95: float
    itl_ms_p99: float
    e2e_ms_p50: float
    e2e_ms_p95: float
    e2e_ms_p99: float
    max_concurrency: int
    """The most requests in flight at the same time, as observed by the client."""

    def to_dict(self) -> dict[str, float | int]:
        """Plain values for a YAML profile or a JSON report."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Metrics:
        """The inverse of :meth:`to_dict`; unknown keys are ignored, missing ones are an error."""
        values: dict[str, float | int] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                raise UserError(f"metrics: missing {f.name!r}")
            value = d[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"metrics: {f.name} must be a number, got {value!r}")
            if f.name in _INT_FIELDS:
                if value != int(value):
                    raise UserError(f"metrics: {f.name} must be an integer, got {value!r}")
                value = int(value)
            values[f.name] = value
        return cls(**values)  # type: ignore[arg-type]


_INT_FIELDS = frozenset({"completed", "failed", "input_tokens", "output_tokens", "max_concurrency"})


def percentile(values: Sequence[float], *, q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; 0.0 for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def aggregate(records: Sequence[RequestRecord], *, duration_s: float) -> Metrics:
    """Summarise per-request records over a benchmark that lasted ``duration_s`` seconds."""
    done = [r for r in records if r.ok]
    input_tokens = sum(r.prompt_tokens for r in done)
    output_tokens = sum(r.output_tokens for r in done)
    ttfts = [r.ttft_s * 1000 for r in done if r.ttft_s is not None]
    tpots = [
        (r.e2e_s - r.ttft_s) / (r.output_tokens - 1) * 1000
        for r in done
        if r.ttft_s is not None and r.output_tokens > 1
    ]
    itls = [gap * 1000 for r in done for gap in r.itls_s]
    e2es = [r.e2e_s * 1000 for r in done]

    def rate(amount: int) -> float:
        return amount / duration_s if duration_s > 0 else 0.0

    return Metrics(
        duration_s=duration_s,
        completed=len(done),
        failed=len(records) - len(done),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        request_throughput=rate(len(done)),
        output_throughput=rate(output_tokens),
        total_token_throughput=rate(input_tokens + output_tokens),
        ttft_ms_p50=percentile(ttfts, q=50),
        ttft_ms_p95=percentile(ttfts, q=95),
        ttft_ms_p99=percentile(ttfts, q=99),
        tpot_ms_p50=percentile(tpots, q=50),
        tpot_ms_p95=percentile(tpots, q=95),
        tpot_ms_p99=percentile(tpots, q=99),
        itl_ms_p50=percentile(itls, q=50),
        itl_ms_p95=percentile(itls, q=95),
        itl_ms_p99=percentile(itls, q=99),
        e2e_ms_p50=percentile(e2es, q=50),
        e2e_ms_p95=percentile(e2es, q=95),
        e2e_ms_p99=percentile(e2es, q=99),
        max_concurrency=_peak_overlap(records),
    )


def _peak_overlap(records: Sequence[RequestRecord]) -> int:
    """The most requests in flight at once (a request ending frees its slot first)."""
    spans = [r for r in records if r.e2e_s > 0]
    events = sorted([(r.start, 1) for r in spans] + [(r.start + r.e2e_s, -1) for r in spans])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def goodput(
    records: Sequence[RequestRecord], *, duration_s: float, slos: Mapping[str, float]
) -> float:
    """Requests per second that met every SLO (``{"ttft_ms_p95": 500, ...}``: each limit is
    applied per request, as ``vllm bench serve --goodput`` does; ITL by the request's own gaps
    at the same percentile)."""
    if duration_s <= 0:
        return 0.0
    met = sum(1 for r in records if r.ok and _meets(r, slos))
    return met / duration_s


def _meets(r: RequestRecord, slos: Mapping[str, float]) -> bool:
    for key, limit in slos.items():
        kind, _, pct = key.partition("_ms_p")
        if kind == "ttft":
            value = (r.ttft_s or 0.0) * 1000
        elif kind == "tpot":
            tokens = max(r.output_tokens - 1, 1)
            value = (r.e2e_s - (r.ttft_s or 0.0)) / tokens * 1000
        elif kind == "itl":
            value = percentile([g * 1000 for g in r.itls_s], q=float(pct or 99))
        else:
            value = r.e2e_s * 1000
        if value > limit:
            return False
    return True
