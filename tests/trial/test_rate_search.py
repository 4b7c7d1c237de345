"""The capacity search's rules with a fake ``measure`` (no engine): doubling then bisection, the
5% stop, the step cap, the sure-miss bound and the over-saturation stop."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import pytest

from autotune.load.arrivals import Arrivals
from autotune.load.backlog import LoadState
from autotune.load.client import BenchResult
from autotune.load.metrics import RequestRecord, aggregate, percentile
from autotune.load.request import Request
from autotune.trial.capacity import RatePoint
from autotune.trial.rate_search import (
    SURE_MISS,
    CapacitySearch,
    StepMonitor,
    find_capacity,
    meets,
    step_requests,
    sure_miss_count,
)

EMPTY = aggregate([], duration_s=0.0)


class Server:
    """Meets every SLO up to ``capacity`` requests/s; records the rates asked for."""

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self.rates: list[float] = []

    def __call__(self, rate: float, step: int) -> RatePoint:
        assert step == len(self.rates)
        self.rates.append(rate)
        return RatePoint(rate=rate, metrics=EMPTY, met=rate <= self.capacity)


def test_doubling_until_a_miss_then_bisection_to_within_five_percent() -> None:
    server = Server(capacity=5.3)
    found = find_capacity(server, start=1.0)
    assert server.rates[:4] == [1.0, 2.0, 4.0, 8.0]  # 8 is the first miss
    lo, hi = 4.0, 8.0
    for rate in server.rates[4:]:  # every later step inside the bracket, at its geometric middle
        assert lo < rate < hi and rate == pytest.approx(math.sqrt(lo * hi))
        lo, hi = (rate, hi) if rate <= server.capacity else (lo, rate)
    assert hi / lo - 1 <= 0.05 and found.rate == lo
    assert 0 < server.capacity / found.rate - 1 <= 0.05
    assert [p.rate for p in found.points] == server.rates
    assert found.at_capacity is not None and found.at_capacity.rate == found.rate


def test_a_start_that_misses_halves_until_a_rate_meets() -> None:
    server = Server(capacity=0.3)
    found = find_capacity(server, start=2.0)
    assert server.rates[:4] == [2.0, 1.0, 0.5, 0.25]
    assert found.rate is not None and 0.3 / found.rate - 1 <= 0.05


def test_the_step_cap_and_a_lost_engine_end_the_search() -> None:
    capped = Server(capacity=5.3)
    found = find_capacity(capped, start=1.0, tolerance=0.0, max_steps=7)
    assert len(capped.rates) == 7 == len(found.points)
    never = find_capacity(Server(capacity=0.0), start=1.0, max_steps=5)
    assert never.rate is None and len(never.points) == 5 and never.at_capacity is None

    calls: list[float] = []

    def dies_on_the_third(rate: float, step: int) -> RatePoint | None:
        calls.append(rate)
        return None if step == 2 else RatePoint(rate=rate, metrics=EMPTY, met=True)

    gone = find_capacity(dies_on_the_third, start=1.0)
    assert len(calls) == 3 and len(gone.points) == 2 and gone.rate == 2.0


def record(*, ttft_s: float = 0.1, e2e_s: float = 1.0, ok: bool = True) -> RequestRecord:
    return RequestRecord(
        ok=ok, prompt_tokens=8, output_tokens=11, start=0.0, ttft_s=ttft_s if ok else None,
        itls_s=(), e2e_s=e2e_s, error=None if ok else "500", status=200 if ok else 500,
    )  # fmt: skip


@pytest.mark.parametrize(("n", "pct"), [(40, 95.0), (40, 99.0), (100, 95.0), (23, 50.0)])
def test_the_sure_miss_count_is_exactly_where_the_percentile_crosses(n: int, pct: float) -> None:
    count = sure_miss_count(n, pct)
    # ``count - 1`` requests just over the limit of 1.5 and the others fast: it may still meet...
    below = [1.501] * (count - 1) + [0.0] * (n - count + 1)
    assert percentile(below, q=pct) <= 1.5
    # ...``count`` of them miss it whatever the others are
    assert percentile([2.0] * count + [0.0] * (n - count), q=pct) > 1.5


def test_a_step_is_decided_once_enough_requests_miss_a_percentile() -> None:
    monitor = StepMonitor(slos={"ttft_ms_p95": 500.0, "e2e_ms_p99": 10_000.0}, n=40)
    idle = LoadState(elapsed_s=1.0, total=40, due=10, sent=10, finished=5)
    for _ in range(30):
        monitor.on_record(record(ttft_s=0.1))
    assert monitor(idle) is None
    monitor.on_record(record(ttft_s=0.6))
    monitor.on_record(record(ttft_s=0.7))
    assert monitor(idle) is None  # 2 of 40 over: the p95 may still meet
    monitor.on_record(record(ttft_s=0.9))
    assert monitor(idle) == SURE_MISS and not monitor.saturated
    assert monitor(idle) == SURE_MISS  # stays decided


def test_too_many_failed_requests_decide_a_miss() -> None:
    monitor = StepMonitor(slos={"itl_ms_p95": 50.0}, n=40)  # ITL: judged at the end only
    state = LoadState(elapsed_s=1.0, total=40, due=10, sent=10, finished=5)
    for _ in range(4):
        monitor.on_record(record(ok=False))
    assert monitor(state) is None  # 4 of 40: 10% may fail
    monitor.on_record(record(ok=False))
    assert monitor(state) == SURE_MISS


def test_a_growing_backlog_stops_the_step_as_saturated() -> None:
    steady, growing = (StepMonitor(slos={"ttft_ms_p95": 500.0}, n=400) for _ in range(2))
    for tick in range(1, 80):  # 10 requests/s due for 8 s (of a 40 s step)
        t = tick / 10
        due = int(10 * t)
        assert steady(LoadState(t, 400, due, due, max(0, due - 5))) is None  # level backlog
        verdict = growing(LoadState(t, 400, due, due, int(5 * t)))  # half of them served
        if verdict is not None:
            break
    assert verdict is not None and verdict.startswith("capacity step decided: saturated")
    assert growing.saturated and not steady.saturated


def test_a_step_meets_within_every_limit_and_few_failures() -> None:
    fast = [record(ttft_s=0.1)] * 19
    ok = aggregate([*fast, record(ok=False)], duration_s=10.0)
    assert meets(ok, {"ttft_ms_p95": 200.0})
    assert not meets(ok, {"ttft_ms_p95": 50.0})
    failing = aggregate([*fast, *[record(ok=False)] * 3], duration_s=10.0)
    assert not meets(failing, {"ttft_ms_p95": 200.0})  # 3 of 22 failed
    assert not meets(replace(ok, completed=0), {"ttft_ms_p95": 200.0})


def test_requests_per_step() -> None:
    assert step_requests(num_prompts=None, max_num_seqs=16, rate=100.0) == 160
    assert step_requests(num_prompts=None, max_num_seqs=256, rate=100.0) == 400
    assert step_requests(num_prompts=None, max_num_seqs=2, rate=100.0) == 40
    assert step_requests(num_prompts=64, max_num_seqs=256, rate=100.0) == 64
    assert step_requests(num_prompts=None, max_num_seqs=16, rate=1.0) == 60  # 60 s of arrivals
    assert step_requests(num_prompts=None, max_num_seqs=16, rate=0.01) == 20


class Engine:
    """A fake ``bench``: serves ``capacity`` requests/s; TTFT 50 ms below it, 5 s above it;
    the engine dies at rate step ``dies_at``."""

    def __init__(self, capacity: float, dies_at: int | None = None) -> None:
        self.capacity, self.dies_at = capacity, dies_at
        self.calls: list[tuple[int, float | None, bool]] = []  # count, rate, monitored

    def __call__(
        self, requests: Sequence[Request], arrivals: Arrivals, monitor: StepMonitor | None
    ) -> BenchResult:
        self.calls.append((len(requests), arrivals.rate, monitor is not None))
        if monitor is None:  # the burst: the engine's own rate
            duration, ttft = len(requests) / self.capacity, 2.0
        else:
            offsets = arrivals.offsets(requests, seed=0)  # as the client sends them
            offered = (len(offsets) - 1) / offsets[-1]
            duration = len(requests) / offered
            ttft = 0.05 if offered <= self.capacity else 5.0
        records = [record(ttft_s=ttft, e2e_s=ttft + 0.1)] * len(requests)
        dead = self.dies_at is not None and len(self.calls) - 1 == self.dies_at
        return BenchResult(
            metrics=aggregate(records, duration_s=duration), errors=(), statuses={},
            aborted="engine exited with code 1" if dead else None, records=tuple(records),
        )  # fmt: skip


def test_the_search_on_an_engine_starts_from_half_a_burst_with_fresh_prompts() -> None:
    engine, asked = Engine(capacity=8.0), []

    def requests_for(step: int, count: int) -> list[Request]:
        asked.append(step)
        return [
            Request(prompt=[10 + step, 11], messages=None, max_tokens=4, ignore_eos=True)
        ] * count

    search = CapacitySearch(slos={"ttft_ms_p95": 500.0}, requests_for=requests_for, num_prompts=40)
    run = search.run(bench=engine, arrivals=None, max_num_seqs=8, base_url="http://unused")
    assert run.fatal is None and run.burst.metrics.request_throughput == pytest.approx(8.0)
    assert engine.calls[0] == (40, None, False)  # the burst: all at once, unmonitored
    assert asked == list(range(len(engine.calls)))  # every step its own prompts
    assert run.capacity.points[0].rate == pytest.approx(4.0)  # half the burst's rate
    assert run.capacity.rate is not None and 0 <= 8.0 / run.capacity.rate - 1 <= 0.05
    # the arrival process is paced so that each step's own sequence offers its rate
    for (count, nominal, _), point in zip(engine.calls[1:], run.capacity.points, strict=True):
        assert nominal != point.rate and count == 40

    dying = Engine(capacity=8.0, dies_at=3)
    gone = search.run(bench=dying, arrivals=None, max_num_seqs=8, base_url="http://unused")
    assert gone.fatal is not None and gone.fatal.aborted == "engine exited with code 1"
    assert len(gone.capacity.points) == 2 and len(dying.calls) == 4
