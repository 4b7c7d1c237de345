"""The capacity search: the highest request rate whose measured percentiles meet every SLO,
found on one running engine (no relaunch). The rules, and why:

* **Start**: a short saturating burst (every request at once) measures the engine's request
  throughput ``R``; the search starts at ``R / 2``, where a serving engine normally meets its
  SLOs. The burst is not a rate step and does not count against ``max_steps``.
* **Coarse doubling**: double the rate until a step misses (or halve it until one meets, when the
  start already misses); then **bisection** at the geometric middle of the highest rate met and
  the lowest missed, until ``hi / lo - 1 <= tolerance`` (5%). At most ``max_steps`` (12) steps.
* **A step meets** when every SLO percentile is within its limit and at most
  ``MAX_FAILED_SHARE`` (10%) of its requests failed.
* **Sure miss** (the bound that decides a step early, so the rest of it is not sent): with ``n``
  requests planned, the interpolated ``pXX`` is above the limit as soon as the value at rank
  ``floor(XX/100 * (n-1))`` is, i.e. once ``n - floor(XX/100 * (n-1))`` finished requests are
  over the limit, however fast the others are. This is exact, not statistical: a step is never
  rejected early that would have met at its end. Counted for TTFT, TPOT and E2E SLOs (ITL pools
  every gap of every request, so it is judged at the end only); more than 10% failed requests
  decide a miss the same way. There is no early *accept*: cut requests would count as failed.
* **Over-saturation** (the queue grows without bound): ``load.saturation.BacklogWatch`` with
  ``share=SATURATED_SHARE``: after 5 s, while requests are still due, the backlog (due but not
  finished) over the latest half of the step grows faster than a quarter of the offered rate,
  i.e. the engine serves less than about 3/4 of it. Such a step stops and is a miss with
  ``saturated=True``; a step near the knee runs to its end and its percentiles decide. After a
  step that ran to its end, ``load.saturation.saturated`` judges the same on the whole step (the
  backlog's slope over the second half of the send window above a quarter of the offered
  rate): a step too short for its queue to reach the SLO still misses when the engine fell
  clearly behind it.
* **Rate of a step**: the rate offered over its send window, ``(n - 1) / last send offset``
  (``paced``): the nominal rate of the arrival process is scaled so that the step's own random
  sequence realizes it.
* **Requests per step** (``step_requests``): the workload's ``--num-prompts`` when given, else
  ``10 x max_num_seqs`` clamped to 40..400 (a p95 needs a few dozen; a full batch must turn over
  several times for the queue to show); never more than ``rate x STEP_BUDGET_S`` (60 s of
  arrivals), never fewer than ``MIN_REQUESTS`` (20). Every step sends fresh prompts (its own
  seed), so prefix caching cannot flatter later steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from autotune.engine.probes import scrape
from autotune.load.arrivals import Arrivals
from autotune.load.backlog import LoadState
from autotune.load.client import BenchResult
from autotune.load.metrics import Metrics, RequestRecord
from autotune.load.request import Request
from autotune.load.saturation import BacklogWatch, saturated
from autotune.trial.capacity import Capacity, RatePoint

MAX_FAILED_SHARE = 0.1
TOLERANCE = 0.05
MAX_STEPS = 12
MIN_REQUESTS = 20
STEP_BUDGET_S = 60.0
SATURATED_SHARE = 0.25
SETTLE_S = 60.0  # after a step cut short: how long the engine may take to drop its requests
SURE_MISS = "capacity step decided: SLO missed"

# (rate, step index) → the step measured; None: the engine cannot be measured any more
Measure = Callable[[float, int], RatePoint | None]


def find_capacity(
    measure: Measure, *, start: float, tolerance: float = TOLERANCE, max_steps: int = MAX_STEPS
) -> Capacity:
    """Doubling (or halving) from ``start`` until the rate is bracketed, then bisection."""
    points: list[RatePoint] = []
    lo: float | None = None  # the highest rate that met every SLO
    hi: float | None = None  # the lowest rate that missed
    rate = start
    while len(points) < max_steps and rate > 0:
        point = measure(rate, len(points))
        if point is None:
            break
        points.append(point)
        if point.met:
            lo = rate if lo is None else max(lo, rate)
        else:
            hi = rate if hi is None else min(hi, rate)
        if hi is None:
            rate *= 2
        elif lo is None:
            rate /= 2
        elif hi / lo - 1 <= tolerance:
            break
        else:
            rate = math.sqrt(lo * hi)
    return Capacity(rate=lo, points=tuple(points))


def meets(metrics: Metrics, slos: Mapping[str, float]) -> bool:
    """Every SLO percentile within its limit, at most 10% failed, something completed."""
    sent = metrics.completed + metrics.failed
    if not metrics.completed or metrics.failed > MAX_FAILED_SHARE * sent:
        return False
    values = metrics.to_dict()
    return all(float(values[key]) <= limit for key, limit in slos.items())


def sure_miss_count(n: int, percentile: float) -> int:
    """Requests over the limit that put the ``percentile`` of ``n`` values over it, whatever the
    others are (linear interpolation between the closest ranks, as ``load.metrics``)."""
    return n - math.floor(percentile / 100 * (n - 1))


def step_requests(*, num_prompts: int | None, max_num_seqs: int | None, rate: float) -> int:
    """How many requests one load step sends (see the module's rules)."""
    target = num_prompts or min(400, max(40, 10 * (max_num_seqs or 4)))
    return max(MIN_REQUESTS, min(target, math.ceil(rate * STEP_BUDGET_S)))


def _value(record: RequestRecord, kind: str) -> float | None:
    """A finished request's own TTFT, TPOT or E2E in ms (None: not judged per request)."""
    if kind == "ttft":
        return None if record.ttft_s is None else record.ttft_s * 1000
    if kind == "e2e":
        return record.e2e_s * 1000
    if kind == "tpot" and record.ttft_s is not None and record.output_tokens > 1:
        return (record.e2e_s - record.ttft_s) / (record.output_tokens - 1) * 1000
    return None


class StepMonitor:
    """Watches one load step: ``on_record`` per finished request; called with the client's
    ``LoadState`` on each poll, it returns why the step is decided early (a sure miss or
    over-saturation), else None."""

    def __init__(self, *, slos: Mapping[str, float], n: int) -> None:
        self.n = n
        self.limits: list[tuple[str, float, int]] = []  # kind, limit in ms, sure-miss count
        for key, limit in slos.items():
            kind, _, pct = key.partition("_ms_p")
            if kind in ("ttft", "tpot", "e2e"):
                self.limits.append((kind, limit, sure_miss_count(n, float(pct))))
        self.over = [0] * len(self.limits)
        self.failed = 0
        self.backlog = BacklogWatch(share=SATURATED_SHARE)
        self.saturated = False
        self.decided: str | None = None

    def on_record(self, record: RequestRecord) -> None:
        if not record.ok:
            self.failed += 1
            return
        for i, (kind, limit, _) in enumerate(self.limits):
            value = _value(record, kind)
            if value is not None and value > limit:
                self.over[i] += 1

    def sure_miss(self) -> bool:
        if self.failed > MAX_FAILED_SHARE * self.n:
            return True
        return any(o >= count for o, (_, _, count) in zip(self.over, self.limits, strict=True))

    def __call__(self, state: LoadState) -> str | None:
        if self.decided is None:
            if self.sure_miss():
                self.decided = SURE_MISS
            elif (why := self.backlog(state)) is not None:
                self.saturated, self.decided = True, f"capacity step decided: {why}"
        return self.decided


# requests, arrivals, the step's monitor (None: the burst) → the step's benchmark
Bench = Callable[[Sequence[Request], Arrivals, StepMonitor | None], BenchResult]


@dataclass(frozen=True)
class CapacityRun:
    """A capacity search on one engine, and the benchmark that ended it if the engine failed."""

    capacity: Capacity
    burst: BenchResult
    fatal: BenchResult | None = None


@dataclass(frozen=True)
class CapacitySearch:
    """``--objective capacity``: the SLOs and fresh prompts for each load step."""

    slos: Mapping[str, float]
    """Metric key (``ttft_ms_p95``) → limit in ms."""
    requests_for: Callable[[int, int], Sequence[Request]]
    """(step, count) → ``count`` requests no earlier step sent (step 0 is the burst)."""
    num_prompts: int | None = None
    """Requests per step (``--num-prompts``); None: from ``max_num_seqs`` (``step_requests``)."""
    tolerance: float = TOLERANCE
    max_steps: int = MAX_STEPS

    def run(
        self,
        *,
        bench: Bench,
        arrivals: Arrivals | None,
        max_num_seqs: int | None,
        base_url: str,
        on_step: Callable[[str], None] = lambda _: None,
    ) -> CapacityRun:
        """Burst, then the rate steps (see the module); stops at the first failed benchmark."""
        count = step_requests(num_prompts=self.num_prompts, max_num_seqs=max_num_seqs, rate=1e9)
        on_step(f"capacity: a burst of {count} requests")
        burst = bench(self.requests_for(0, count), Arrivals(), None)
        if burst.aborted or burst.metrics.request_throughput <= 0:
            return CapacityRun(Capacity(rate=None), burst, fatal=burst)
        shape = arrivals or Arrivals()
        fatal: list[BenchResult] = []

        def measure(rate: float, step: int) -> RatePoint | None:
            n = step_requests(num_prompts=self.num_prompts, max_num_seqs=max_num_seqs, rate=rate)
            on_step(f"capacity: step {step + 1} at {rate:.3g} requests/s ({n} requests)")
            monitor = StepMonitor(slos=self.slos, n=n)
            requests = self.requests_for(step + 1, n)
            result = bench(requests, paced(shape, rate, requests), monitor)
            if result.aborted and result.aborted != monitor.decided:
                fatal.append(result)
                return None
            if monitor.decided:
                settle(base_url)
            behind = monitor.decided is None and saturated(result, share=SATURATED_SHARE) is True
            met = monitor.decided is None and not behind and meets(result.metrics, self.slos)
            return RatePoint(
                rate=rate, metrics=result.metrics, met=met, saturated=monitor.saturated or behind
            )

        start = burst.metrics.request_throughput / 2
        found = find_capacity(
            measure, start=start, tolerance=self.tolerance, max_steps=self.max_steps
        )
        return CapacityRun(found, burst, fatal=fatal[0] if fatal else None)


def paced(shape: Arrivals, rate: float, requests: Sequence[Request], *, seed: int = 0) -> Arrivals:
    """``shape`` at the nominal rate that offers ``rate`` over the send window of these
    requests (``(n - 1) / last offset``, with the client's ``seed``): a short random sequence
    is often 10-20% slower or faster than its nominal rate, which would bias a capacity."""
    offsets = shape.at_rate(1.0).offsets(requests, seed=seed)
    window = max(offsets, default=0.0)
    if len(offsets) < 2 or window <= 0:
        return shape.at_rate(rate)
    return shape.at_rate(rate * window / (len(offsets) - 1))


def settle(base_url: str, *, timeout_s: float = SETTLE_S) -> None:
    """Wait until the engine has dropped the requests of a step cut short (its ``/metrics``
    shows none running or waiting), so the next step starts on an idle engine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = scrape(base_url)
        if stats is None or stats.requests_running is None:
            time.sleep(1.0)  # unreadable: give the engine a moment, no more
            return
        if stats.requests_running + (stats.requests_waiting or 0) == 0:
            return
        time.sleep(0.2)
