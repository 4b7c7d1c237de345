"""Fewer batched tokens where the KV cache bound the best configuration and the memory model
predicts room for more requests (``search.moves.shrink``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from autotune.engine.defaults import Value
from autotune.search.moves.edge import Climb, Tried
from autotune.search.moves.load_shape import wave_up, waves
from autotune.search.moves.shrink import shrink
from tests.search.test_edge import SPACE


def capacity(params: Mapping[str, Value]) -> int:
    """A toy memory model: the KV cache grows with the utilization; each batched token's
    activation memory costs it 40 tokens."""
    kv = int((float(params["gpu_memory_utilization"]) - 0.70) * 500_000)
    return kv - 40 * int(params["max_num_batched_tokens"])


def move(tried: list[Tried], tokens: int, model: Callable[..., int | None] | None) -> Climb | None:
    return shrink(space=SPACE, tried=tried, request_tokens=tokens, most=48, capacity=model)


P = {"gpu_memory_utilization": 0.92, "max_num_seqs": 8, "max_num_batched_tokens": 2048}
# 110000 - 81920 = 28080 KV tokens: one request of 17000 tokens; 5 of 8 ran, the rest waited
FULL = Tried(P, "ok", 50.0, preemptions=0, peak_kv_pct=91.0, peak_running=1, peak_waiting=40)


def test_a_full_kv_cache_trades_batched_tokens_for_one_more_request() -> None:
    shrunk = move([FULL], 17_000, capacity)
    assert shrunk is not None and shrunk.why.startswith("shrink:"), shrunk
    size = int(shrunk.params["max_num_batched_tokens"])
    # the largest compass step down that holds two requests: 110000 - 40 * 1722 = 41120
    assert size == 1722 and capacity(shrunk.params) >= 2 * 17_000
    assert shrunk.params["gpu_memory_utilization"] == 0.92  # memory kept
    assert shrunk.params["max_num_seqs"] == 8  # more than the cache holds already
    # once: the smaller size is known now
    again = [FULL, Tried(shrunk.params, "ok", 40.0)]
    assert move(again, 17_000, capacity) is None


def test_no_shrink_without_a_full_cache_or_for_a_small_share_of_requests() -> None:
    idle = dataclasses.replace(FULL, peak_running=8, peak_waiting=0, peak_kv_pct=60.0)
    assert move([idle], 17_000, capacity) is None

    # cheap activations: 269 requests of 400 tokens fit, and even 1/8 of the batched tokens
    # frees room for 4 more: below 10%
    def cheap(params: Mapping[str, Value]) -> int:
        return capacity(params) + 39 * int(params["max_num_batched_tokens"])

    assert move([FULL], 400, cheap) is None
    assert move([FULL], 17_000, None) is None


def test_sequences_sized_to_the_cache_follow_it() -> None:
    # requests of 3000 tokens: 9 fit at 2048 batched tokens, and 8 sequences ran (a fill's)
    shrunk = move([FULL], 3000, capacity)
    assert shrunk is not None
    assert shrunk.params["max_num_batched_tokens"] == 1722
    assert shrunk.params["max_num_seqs"] == 41120 // 3000  # 13: what the smaller chunk holds


def test_sequences_a_fill_sized_and_all_running_shrink_the_chunk_for_more_of_them() -> None:
    """No preemptions and the cache 85% full, but all 8 sequences ran with 40 requests waiting:
    a fill sized them to the cache, and more need a larger cache (a smaller chunk). Not where
    the cache sat idle, nor where the sequences were all the requests in flight."""
    bound = dataclasses.replace(FULL, peak_running=8, peak_kv_pct=85.0)
    shrunk = move([bound], 3000, capacity)
    assert shrunk is not None and shrunk.params["max_num_batched_tokens"] == 1722
    assert shrunk.params["max_num_seqs"] == 13
    all_in = shrink(space=SPACE, tried=[bound], request_tokens=3000, most=8, capacity=capacity)
    assert all_in is None
    idle = dataclasses.replace(bound, peak_kv_pct=40.0)
    assert move([idle], 3000, capacity) is None


def test_sequences_round_up_to_save_one_of_few_waves() -> None:
    """46 sequences take 96 requests in three waves, 48 in two (4% more: taken); 37 would need
    30% more; 80 of 1,000 take 13 waves, which blur as requests finish apart."""
    reach = 2.0**0.125
    assert wave_up(46, 96, reach=reach) == 48
    assert wave_up(37, 96, reach=reach) == 37
    assert wave_up(80, 1000, reach=reach) == 80
    assert wave_up(96, 96, reach=reach) == 96
    assert waves(46, 96) == 3 and waves(48, 96) == 2


# A ceiling on the tokens running (``ceiling.learn``): FULL's 2 requests of 10,000 tokens
# (71.2% of 28,080) served at 0.92; 4 crashed under load there in a 42,000-token cache.
TWO = dataclasses.replace(FULL, kv_cache_tokens=28_080, peak_kv_pct=71.2, peak_running=2)


def crash(tokens: int) -> Tried:
    params = P | {"max_num_batched_tokens": tokens}
    kv = capacity(params)
    return Tried(params, "crash_under_load", kv_cache_tokens=kv, peak_running=kv // 10_000)


def test_under_a_learned_ceiling_the_chunk_shrinks_only_as_far_as_its_guess_holds() -> None:
    """4 requests crashed in a 69,040-token cache at 1,024 batched tokens: the ceiling's guess
    at 0.92 (37,000 tokens) holds 3. The first compass step (1,722: 41,120 tokens) holds 4;
    the largest chunk between whose cache holds 3 (30,000 tokens) is 2,000."""
    shrunk = move([TWO, crash(1024)], 10_000, capacity)
    assert shrunk is not None and shrunk.params["max_num_batched_tokens"] == 2000
    assert capacity(shrunk.params) // 10_000 == 3
    without = move([TWO], 10_000, capacity)  # no crash, no ceiling: the compass step
    assert without is not None and without.params["max_num_batched_tokens"] == 1722


def test_where_the_guess_holds_no_more_one_more_request_unless_a_crash_rules_it_out() -> None:
    """4 requests crashed in a 42,000-token cache: the guess (29,000 tokens) holds the 2 that
    ran; 3 (30,000) are below every crash, so one launch tries them. Once 3 crashed too,
    nothing."""
    edge = move([TWO, crash(1700)], 10_000, capacity)
    assert edge is not None and edge.params["max_num_batched_tokens"] == 2000
    assert move([TWO, crash(1700), crash(2000)], 10_000, capacity) is None
