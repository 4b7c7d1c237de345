"""Metric definitions, checked against hand-computed values."""

from __future__ import annotations

import pytest

from autotune.errors import UserError
from autotune.load.metrics import Metrics, RequestRecord, aggregate, percentile


def _record(
    *,
    start: float = 0.0,
    e2e: float = 1.0,
    ttft: float | None = 0.1,
    out: int = 10,
    prompt: int = 5,
    itls: tuple[float, ...] = (),
    ok: bool = True,
) -> RequestRecord:
    return RequestRecord(
        ok=ok,
        prompt_tokens=prompt,
        output_tokens=out,
        start=start,
        ttft_s=ttft,
        itls_s=itls,
        e2e_s=e2e,
        error=None if ok else "500 boom",
        status=200 if ok else 500,
    )


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 95, 3.85),  # rank 0.95 * 3 = 2.85 -> 3 + 0.85 * (4 - 3)
        ([1.0, 2.0, 3.0, 4.0], 99, 3.97),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([10.0, 20.0], 25, 12.5),
        ([7.0], 99, 7.0),
        ([], 50, 0.0),
    ],
)
def test_percentile_interpolates_linearly(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q=q) == pytest.approx(expected)


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], q=101)


def test_tpot_is_decode_time_per_token_after_the_first() -> None:
    m = aggregate(
        [
            _record(e2e=1.0, ttft=0.1, out=10),  # (1.0 - 0.1) / 9 = 100 ms
            _record(e2e=0.5, ttft=0.2, out=1),  # one token: no TPOT
            _record(e2e=9.0, ttft=0.1, out=100, ok=False),  # failed: excluded
        ],
        duration_s=1.0,
    )
    assert m.tpot_ms_p50 == pytest.approx(100.0) and m.tpot_ms_p99 == pytest.approx(100.0)


def test_aggregate_counts_throughput_and_latencies() -> None:
    records = [
        _record(start=0.0, e2e=1.0, ttft=0.2, out=10, prompt=5, itls=(0.1, 0.1, 0.3)),
        _record(start=0.5, e2e=1.5, ttft=0.4, out=20, prompt=7, itls=(0.2,)),
        _record(start=1.0, e2e=1.0, ttft=None, out=0, prompt=0, ok=False),
    ]
    m = aggregate(records, duration_s=2.0)
    assert (m.completed, m.failed) == (2, 1)
    assert (m.input_tokens, m.output_tokens) == (12, 30)
    assert m.request_throughput == pytest.approx(1.0)
    assert m.output_throughput == pytest.approx(15.0)
    assert m.total_token_throughput == pytest.approx(21.0)
    assert m.ttft_ms_p50 == pytest.approx(300.0)  # 200 and 400 ms
    assert m.e2e_ms_p95 == pytest.approx(1000 + 0.95 * 500)
    assert m.itl_ms_p50 == pytest.approx(150.0)  # pooled: 100, 100, 200, 300
    assert m.itl_ms_p99 == pytest.approx(200 + 0.97 * 100)
    # (1.0 - 0.2) / 9 and (1.5 - 0.4) / 19 seconds per token
    assert m.tpot_ms_p50 == pytest.approx((800 / 9 + 1100 / 19) / 2)
    assert m.max_concurrency == 2  # [0, 1], [0.5, 2], [1, 2]: the first ends as the third starts


def test_no_data_gives_zeros() -> None:
    m = aggregate([], duration_s=0.0)
    assert all(v == 0 for v in m.to_dict().values())
    failed_only = aggregate([_record(ok=False)], duration_s=1.0)
    assert failed_only.failed == 1 and failed_only.ttft_ms_p99 == 0.0
    assert failed_only.output_throughput == 0.0


def test_metrics_round_trip() -> None:
    m = aggregate([_record(), _record(start=0.3)], duration_s=1.3)
    d = m.to_dict()
    assert Metrics.from_dict(d) == m
    assert Metrics.from_dict({**d, "future_metric": 1.0}) == m
    assert isinstance(Metrics.from_dict({**d, "completed": 2.0}).completed, int)
    del d["itl_ms_p95"]
    with pytest.raises(UserError, match="itl_ms_p95"):
        Metrics.from_dict(d)
    with pytest.raises(UserError, match="completed"):
        Metrics.from_dict({**m.to_dict(), "completed": 1.5})
    with pytest.raises(UserError, match="failed"):
        Metrics.from_dict({**m.to_dict(), "failed": True})
