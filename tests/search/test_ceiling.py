"""A ceiling on the tokens running, learned from crashes under load and served peaks, and the
configuration aimed under it (``search.moves.ceiling``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from autotune.engine.defaults import Value
from autotune.search.moves.ceiling import Ceiling, aim, learn
from autotune.search.moves.edge import Climb, Tried
from tests.search.test_edge import SPACE

REQUEST = 4000  # tokens of a request, prompt and output


def capacity(params: Mapping[str, Value]) -> int:
    """A toy memory model: the KV cache grows with the utilization; each sequence's CUDA
    graphs cost it 100 tokens."""
    util, seqs = float(params["gpu_memory_utilization"]), int(params["max_num_seqs"])
    return int((util - 0.62) * 400_000) - 100 * seqs


def p(util: float, seqs: int) -> dict[str, Value]:
    return {"gpu_memory_utilization": util, "max_num_seqs": seqs, "max_num_batched_tokens": 2048}


def launched(
    params: dict[str, Value], outcome: str, value: float | None = None, **more: Any
) -> Tried:
    tried = Tried(params, outcome, value, kv_cache_tokens=capacity(params))
    return dataclasses.replace(tried, **more)


# 256 sequences at 0.77: 34400 KV tokens, full, 8 requests running; one step up crashed, and
# so did 16 sequences at 0.77 (a larger KV cache, 58400 tokens): a ceiling, not a fixed cliff
BEST = launched(p(0.77, 256), "ok", 100.0, preemptions=15, peak_kv_pct=100.0, peak_running=8)
CRASH = launched(p(0.78, 256), "crash_under_load")
FILLED = launched(p(0.77, 16), "crash_under_load")


def move(tried: list[Tried], most: int = 96) -> Climb | None:
    return aim(
        space=SPACE,
        tried=tried,
        ceiling=learn(space=SPACE, tried=tried, request_tokens=REQUEST, most=most),
        request_tokens=REQUEST,
        most=most,
        capacity=capacity,
    )


def test_bounds_come_from_the_served_peak_and_the_crash() -> None:
    ceiling = learn(space=SPACE, tried=[BEST, CRASH, FILLED], request_tokens=REQUEST, most=96)
    assert ceiling is not None
    assert ceiling.low == pytest.approx(34_400 / 0.23)  # served: 34400 tokens at 0.77
    assert ceiling.high == pytest.approx(38_400 / 0.22)  # crashed holding at most 38400 at 0.78
    assert 34_400 < ceiling.tokens(0.77) < 38_400 * 0.23 / 0.22
    # no crash, nothing served with its peak known, or bounds that contradict each other
    assert learn(space=SPACE, tried=[BEST], request_tokens=REQUEST, most=96) is None
    unknown = dataclasses.replace(BEST, peak_kv_pct=None)
    assert learn(space=SPACE, tried=[unknown, CRASH], request_tokens=REQUEST, most=96) is None
    low_crash = launched(p(0.70, 8), "crash_under_load")  # 8 x 4000 tokens crashed at 0.70
    assert learn(space=SPACE, tried=[BEST, low_crash], request_tokens=REQUEST, most=96) is None
    # crashes only above what served: as well a cliff at 0.78, whatever runs
    assert learn(space=SPACE, tried=[BEST, CRASH], request_tokens=REQUEST, most=96) is None


def test_fewer_sequences_at_a_lower_utilization_run_more_requests_under_the_ceiling() -> None:
    aimed = move([BEST, CRASH, FILLED])
    assert aimed is not None and aimed.why.startswith("aim:"), aimed
    ceiling = Ceiling(low=34_400 / 0.23, high=38_400 / 0.22)
    util, seqs = float(aimed.params["gpu_memory_utilization"]), int(aimed.params["max_num_seqs"])
    # 10 whole requests fit under the ceiling (43600 tokens at 0.73) and in the KV cache
    # (43000); 0.73 is the lowest utilization where they do
    assert (util, seqs) == (0.73, 10)
    assert seqs * REQUEST <= ceiling.tokens(util) and capacity(aimed.params) >= seqs * REQUEST
    assert capacity(p(0.72, 10)) < 10 * REQUEST
    assert aimed.params["max_num_batched_tokens"] == 2048  # the best's other settings
    # once: launched, it is known
    served = launched(aimed.params, "ok", 120.0, preemptions=0, peak_kv_pct=85.0, peak_running=10)
    assert move([BEST, CRASH, FILLED, served]) is None


def test_no_aim_where_the_best_ran_every_request_or_nothing_crashed() -> None:
    assert move([BEST, CRASH, FILLED], most=8) is None  # all 8 requests in flight ran already
    # its 8 sequences bound it (all ran, the cache half empty): more of them is the fill's
    idle = dataclasses.replace(BEST, preemptions=0, peak_kv_pct=40.0, params=p(0.77, 8))
    assert move([idle, CRASH, FILLED]) is None
    assert move([BEST]) is None


def test_a_smaller_chunk_where_the_best_one_leaves_too_small_a_cache() -> None:
    """Each batched token costs the cache 10 tokens here (the launches ran at 2,048, where the
    two models agree): the levels with room under the ceiling for 11 or 12 requests leave
    caches for fewer at 2,048 batched tokens, so the aim takes a smaller chunk and runs 11
    (10 at the best's chunk, the test above)."""

    def chunked(params: Mapping[str, Value]) -> int:
        return capacity(params) - 10 * (int(params["max_num_batched_tokens"]) - 2048)

    tried = [BEST, CRASH, FILLED]
    aimed = aim(
        space=SPACE,
        tried=tried,
        ceiling=learn(space=SPACE, tried=tried, request_tokens=REQUEST, most=96),
        request_tokens=REQUEST,
        most=96,
        capacity=chunked,
    )
    assert aimed is not None and "max_num_batched_tokens" in aimed.why, aimed
    seqs, chunk = int(aimed.params["max_num_seqs"]), int(aimed.params["max_num_batched_tokens"])
    assert chunk < 2048
    assert min(seqs, chunked(aimed.params) // REQUEST) == 11


def test_a_preempting_best_counts_the_requests_its_cache_holds_whole() -> None:
    """vLLM's running peak of a configuration that preempted counts requests admitted with part
    of their context (then evicted and recomputed): 12 at its peak, but its 34400 KV tokens hold
    8 whole requests of 4000. Aimed at 10 whole ones, that is more; without preemptions, 12
    really ran at once and 10 is fewer."""
    churned = dataclasses.replace(BEST, peak_running=12)
    aimed = move([churned, CRASH, FILLED])
    assert aimed is not None and aimed.why.startswith("aim:"), aimed
    assert aimed.params["max_num_seqs"] == 10 and "(8 -> 10 requests" in aimed.why
    steady = dataclasses.replace(churned, preemptions=0)
    assert move([steady, CRASH, FILLED]) is None


def test_no_aim_at_what_ran_already_with_a_chunk_a_compass_step_away() -> None:
    aimed = move([BEST, CRASH, FILLED])
    assert aimed is not None
    chunk = int(aimed.params["max_num_batched_tokens"])
    near = launched({**aimed.params, "max_num_batched_tokens": chunk + chunk // 20}, "ok", 90.0)
    assert move([BEST, CRASH, FILLED, near]) is None
    far = launched({**aimed.params, "max_num_batched_tokens": chunk // 2}, "ok", 90.0)
    assert move([BEST, CRASH, FILLED, far]) is not None
