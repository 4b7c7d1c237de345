"""Is the server keeping up with the arrivals? The backlog of a paced benchmark and its growth.

The **backlog** at time ``t`` is the number of requests due by ``t`` (their send offset has
passed) and not finished: waiting on the client for a ``--concurrency`` slot, queued in the
server, or being generated. A server that keeps up holds it roughly level; an over-saturated
one lets it grow at about ``offered rate - service rate`` requests per second, without bound.

:func:`saturation` is that growth, measured after a run: the least-squares slope of the backlog
sampled at :data:`POINTS` evenly spaced times over the second half of the send window (the
first half is the fill-up, where the backlog rises even on a fast server). :class:`BacklogWatch`
judges the same while a run goes on (``client.run_benchmark(watch=...)``) so that a capacity
search can stop a run that is clearly over the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from autotune.load.backlog import LoadState
from autotune.load.client import BenchResult

__all__ = [
    "POINTS",
    "BacklogWatch",
    "backlog_at",
    "lags",
    "offered_rate",
    "saturated",
    "saturation",
]

POINTS = 50  # samples of the backlog in the second half of the send window
MIN_DUE = 8  # fewer requests due in that half: too few to tell
SHARE = 0.1  # growth above this share of the offered rate: over-saturated


def _due_and_finish(result: BenchResult) -> list[tuple[float, float]]:
    """Each request's due and finish time, in seconds after the start of the run (none when
    sent all at once)."""
    if not result.offsets:
        return []
    return [
        (offset, record.start + record.e2e_s - result.started)
        for offset, record in zip(result.offsets, result.records, strict=True)
    ]


def backlog_at(result: BenchResult, t: float) -> int:
    """Requests due by ``t`` seconds after the start and not finished then."""
    return sum(1 for due, finish in _due_and_finish(result) if due <= t < finish)


def offered_rate(result: BenchResult) -> float | None:
    """Requests per second over the send window (None: all at once, or a single instant)."""
    window = max(result.offsets, default=0.0)
    return (len(result.offsets) - 1) / window if window > 0 else None


def saturation(result: BenchResult) -> float | None:
    """Backlog growth in requests/s over the second half of the send window (see the module);
    None when the requests were sent all at once or too few were due in that half."""
    window = max(result.offsets, default=0.0)
    spans = _due_and_finish(result)
    if window <= 0 or sum(1 for due, _ in spans if due >= window / 2) < MIN_DUE:
        return None
    times = [window / 2 + window / 2 * k / (POINTS - 1) for k in range(POINTS)]
    counts = [sum(1 for due, finish in spans if due <= t < finish) for t in times]
    return _slope(times, [float(c) for c in counts])


def saturated(result: BenchResult, *, share: float = SHARE) -> bool | None:
    """Whether the backlog grew faster than ``share`` of the offered rate (None: unknown)."""
    growth, rate = saturation(result), offered_rate(result)
    if growth is None or rate is None:
        return None
    return growth > share * rate


def lags(result: BenchResult) -> list[float | None]:
    """Per request: seconds from when it was due to its first token (the client's wait for a
    slot, the server's queue and the prefill); None for a failed request or all at once."""
    if not result.offsets:
        return [None] * len(result.records)
    return [
        None if record.ttft_s is None else record.start + record.ttft_s - result.started - offset
        for offset, record in zip(result.offsets, result.records, strict=True)
    ]


@dataclass
class BacklogWatch:
    """A ``watch`` for ``client.run_benchmark``: stops the run with a reason once, after
    ``min_s`` seconds and while requests are still due, the backlog over the latest half of
    the run grows faster than ``share`` of the rate at which requests fell due."""

    min_s: float = 5.0
    share: float = SHARE
    min_backlog: int = MIN_DUE
    samples: list[tuple[float, int]] = field(default_factory=list)

    def __call__(self, state: LoadState) -> str | None:
        self.samples.append((state.elapsed_s, state.backlog))
        if state.elapsed_s < self.min_s or state.due >= state.total:
            return None
        if state.backlog < self.min_backlog:
            return None
        recent = [(t, b) for t, b in self.samples if t >= state.elapsed_s / 2]
        if len(recent) < 3:
            return None
        growth = _slope([t for t, _ in recent], [float(b) for _, b in recent])
        rate = state.due / state.elapsed_s
        if growth > self.share * rate:
            return (
                f"saturated: the backlog grows {growth:.2g} requests/s at "
                f"{rate:.3g} requests/s offered ({state.backlog} waiting or running)"
            )
        return None


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ``ys`` over ``xs`` (0.0 when ``xs`` do not vary)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
