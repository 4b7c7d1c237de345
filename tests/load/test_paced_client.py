"""The client's paced runs against a local streaming server: offsets kept, ``watch`` stopping a
run, idle gaps pulsing the stall detector."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from autotune.load.arrivals import Arrivals
from autotune.load.backlog import LoadState
from autotune.load.client import run
from autotune.load.request import Request
from tests.load.test_client import _Server


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(usage=True)
    yield srv
    srv.stop()


def _requests(n: int, stamps: list[float] | None = None) -> list[Request]:
    return [
        Request([100 + i] * 4, None, max_tokens=3, ignore_eos=True, timestamp=t)
        for i, t in enumerate(stamps or [None] * n)
    ]


def test_paced_requests_are_never_sent_before_their_offset(server: _Server) -> None:
    requests = _requests(30)
    shape = Arrivals(rate=40, burstiness=0.5, ramp_up_s=0.5)
    result = run(
        base_url=server.url, model="m", requests=requests, arrivals=shape, seed=3,
        max_concurrency=4,
    )  # fmt: skip
    assert result.metrics.completed == 30 and result.aborted is None
    assert list(result.offsets) == shape.offsets(requests, seed=3)  # the seed's offsets
    for offset, record in zip(result.offsets, result.records, strict=True):
        assert record.start >= result.started + offset
    assert server.peak <= 4


def test_request_rate_is_short_for_poisson_arrivals(server: _Server) -> None:
    requests = _requests(10)
    short = run(base_url=server.url, model="m", requests=requests, request_rate=50, seed=1)
    assert list(short.offsets) == Arrivals(rate=50).offsets(requests, seed=1)
    at_once = run(base_url=server.url, model="m", requests=requests)
    assert at_once.offsets == () and at_once.metrics.completed == 10
    with pytest.raises(ValueError, match="not both"):
        run(base_url=server.url, model="m", requests=requests, request_rate=5,
            arrivals=Arrivals(rate=5))  # fmt: skip


def test_watch_sees_the_counts_and_can_stop_the_run(server: _Server) -> None:
    seen: list[LoadState] = []

    def watch(state: LoadState) -> str | None:
        seen.append(state)
        return "backlog" if state.finished >= 3 else None

    result = run(
        base_url=server.url, model="m", requests=_requests(200), arrivals=Arrivals(rate=10),
        watch=watch,
    )  # fmt: skip
    assert result.aborted == "backlog"
    assert result.metrics.completed < 200 and result.metrics.failed > 0
    assert seen and all(
        s.total == 200 and s.finished <= s.sent <= s.due <= s.total for s in seen
    ), seen
    assert [s.due for s in seen] == sorted(s.due for s in seen)


def test_an_idle_gap_of_a_trace_pulses_the_stall_detector(server: _Server) -> None:
    pulses: list[float] = []
    result = run(
        base_url=server.url, model="m", requests=_requests(2, [0.0, 1.0]),
        arrivals=Arrivals(trace_speed=1), on_chunk=lambda: pulses.append(time.perf_counter()),
    )  # fmt: skip
    first, second = result.records
    idle = [t for t in pulses if first.start + first.e2e_s < t < second.start]
    assert result.metrics.completed == 2 and len(idle) >= 2  # polled every 0.2 s while idle
