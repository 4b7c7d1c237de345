"""A few more sequences where they take the benchmark's requests in one wave fewer
(``search.moves.fewer_waves``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from autotune.engine.defaults import Value
from autotune.search.moves.edge import Climb, Tried
from autotune.search.moves.fewer_waves import fewer_waves
from autotune.search.moves.load_shape import waves
from tests.search.test_edge import SPACE

P = {"gpu_memory_utilization": 0.83, "max_num_seqs": 52, "max_num_batched_tokens": 512}
# all 52 sequences ran, the cache 96% used, no preemptions: 160 requests take 4 waves
BEST = Tried(P, "ok", 1200.0, preemptions=0, peak_kv_pct=96.0, peak_running=52, peak_waiting=160)


def test_sequences_that_take_the_requests_in_one_wave_fewer() -> None:
    move = fewer_waves(space=SPACE, tried=[BEST], most=160)
    assert move is not None and move.why.startswith("waves:"), move
    assert move.params["max_num_seqs"] == 54  # ceil(160 / 3)
    assert waves(54, 160) == waves(52, 160) - 1 == 3
    assert move.params["gpu_memory_utilization"] == 0.83  # memory kept
    # once: that batch setting is known now, at any memory setting
    ran = Tried(dict(move.params) | {"gpu_memory_utilization": 0.82}, "crash_under_load")
    assert fewer_waves(space=SPACE, tried=[BEST, ran], most=160) is None


def test_the_memory_model_lowers_the_utilization_for_more_sequences() -> None:
    move = fewer_waves(space=SPACE, tried=[BEST], most=160, expected=lambda p: 0.815)
    assert move is not None and move.params["gpu_memory_utilization"] == 0.81


def test_no_move_where_the_batch_or_the_waves_do_not_bind() -> None:
    def move(best: Tried, most: int = 160) -> object:
        return fewer_waves(space=SPACE, tried=[best], most=most)

    assert move(dataclasses.replace(BEST, peak_running=40)) is None  # not all sequences ran
    assert move(dataclasses.replace(BEST, preemptions=3)) is None  # the KV cache bound it
    # 16 sequences took 93% of the cache: 20 would take 116%, and 96 requests in 5 waves
    near_full = dataclasses.replace(BEST, params=P | {"max_num_seqs": 16}, peak_kv_pct=93.0,
                                    peak_running=16)  # fmt: skip
    assert move(near_full, most=96) is None
    assert move(dataclasses.replace(near_full, peak_kv_pct=60.0), most=96) is not None
    assert move(BEST, most=52) is None  # one wave already
    assert move(BEST, most=40) is None  # fewer requests than sequences
    # 100 requests in 2 waves of 52: one wave takes 100 sequences, beyond the reach
    assert move(BEST, most=100) is None
    # 52 x 7 waves: one fewer saves too little to measure
    assert move(BEST, most=7 * 52) is None
    fixed = dataclasses.replace(BEST, peak_running=None)
    assert move(fixed) is None


def test_no_move_to_as_many_sequences_as_failed_for_memory() -> None:
    larger = P | {"max_num_seqs": 54, "max_num_batched_tokens": 1024}
    crashed = Tried(larger, "crash_under_load")
    assert fewer_waves(space=SPACE, tried=[BEST, crashed], most=160) is None
    above = Tried(larger | {"gpu_memory_utilization": 0.85}, "crash_under_load")
    assert fewer_waves(space=SPACE, tried=[BEST, above], most=160) is not None


def test_a_full_cache_gets_a_smaller_chunk_that_holds_the_wave() -> None:
    """52 sequences at 1,024 batched tokens filled the cache (51 requests of 2,000 tokens fit,
    3 preemptions): 54 sequences need 108,000 tokens, which the largest smaller chunk, 943,
    leaves. Not where 108,000 running tokens crashed under load at this utilization."""

    def capacity(params: Mapping[str, Value]) -> int:
        seqs, chunk = int(params["max_num_seqs"]), int(params["max_num_batched_tokens"])
        return 170_000 - 100 * seqs - 60 * chunk

    full = P | {"max_num_batched_tokens": 1024}
    best = dataclasses.replace(
        BEST, params=full, kv_cache_tokens=capacity(full), preemptions=3, peak_kv_pct=100.0
    )

    def move(tried: list[Tried]) -> Climb | None:
        return fewer_waves(
            space=SPACE, tried=tried, most=160, request_tokens=2000, capacity=capacity
        )

    sized = move([best])
    assert sized is not None and sized.why.startswith("waves:"), sized
    assert sized.params["max_num_seqs"] == 54
    assert sized.params["max_num_batched_tokens"] == 943
    assert (
        capacity(sized.params)
        >= 54 * 2000
        > capacity(sized.params | {"max_num_batched_tokens": 944})
    )
    assert fewer_waves(space=SPACE, tried=[best], most=160) is None  # no memory model
    # not full (all 52 ran, none preempted) but 99% used: 54 use 102.8% at that rate, and the
    # chunk is sized to the peak's use per sequence (104,177 tokens), not to full requests
    near = dataclasses.replace(best, preemptions=0, peak_kv_pct=99.0)
    assert near.kv_pressure() != "full"
    peak = move([near])
    assert peak is not None and peak.params["max_num_batched_tokens"] == 1007
    more = P | {"max_num_seqs": 60}
    crashed = Tried(more, "crash_under_load", kv_cache_tokens=108_000, peak_running=54)
    assert move([best, crashed]) is None
