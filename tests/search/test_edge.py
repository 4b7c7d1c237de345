"""The memory-edge climb, the local moves, the lift (autotune/edge.py) and the KV-fit moves
(autotune/kv_fit.py): pure functions."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping

from autotune.engine.defaults import Value
from autotune.load.request import Request
from autotune.search.moves.edge import Tried, lift, next_climb
from autotune.search.moves.kv_fit import fill, repair
from autotune.search.moves.load_shape import Load
from autotune.search.moves.local import local_move
from autotune.search.moves.retreat import retreat
from autotune.search.space import Dim, SearchSpace

SPACE = SearchSpace(
    dims=(
        Dim("gpu_memory_utilization", 0.70, 0.98, is_float=True),
        Dim("max_num_seqs", 8, 256, log=True),
        Dim("max_num_batched_tokens", 512, 8192, log=True),
    )
)


def ok(util: float, seqs: int, tokens: int, value: float) -> Tried:
    p = {"gpu_memory_utilization": util, "max_num_seqs": seqs, "max_num_batched_tokens": tokens}
    return Tried(params=p, outcome="ok", value=value)


def failed(util: float, seqs: int, tokens: int, outcome: str) -> Tried:
    p = {"gpu_memory_utilization": util, "max_num_seqs": seqs, "max_num_batched_tokens": tokens}
    return Tried(params=p, outcome=outcome)


def test_climb_bisects_between_the_best_and_the_top_of_the_range() -> None:
    move = next_climb(space=SPACE, tried=[ok(0.90, 64, 2048, 100.0), ok(0.95, 8, 512, 50.0)])
    assert move is not None
    assert move.params == {
        "gpu_memory_utilization": 0.94,
        "max_num_seqs": 64,
        "max_num_batched_tokens": 2048,
    }
    assert "up to 0.98" in move.why


def test_climb_stops_below_a_covering_failure_and_at_the_resolution() -> None:
    best = ok(0.94, 64, 2048, 100.0)
    graphs = failed(0.97, 32, 1024, "oom_cuda_graphs")  # smaller batches failed: so would ours
    move = next_climb(space=SPACE, tried=[best, graphs])
    assert move is not None and move.params["gpu_memory_utilization"] == 0.95
    assert "0.97 fails" in move.why
    done = [best, graphs, ok(0.95, 64, 2048, 101.0), failed(0.96, 64, 2048, "oom_cuda_graphs")]
    assert next_climb(space=SPACE, tried=done) is None


def test_a_larger_configuration_failing_above_is_no_ceiling_but_free_memory_is() -> None:
    best = ok(0.90, 64, 2048, 100.0)
    bigger = failed(0.92, 128, 4096, "oom_cuda_graphs")  # needs more: says nothing about ours
    move = next_climb(space=SPACE, tried=[best, bigger])
    assert move is not None and move.params["gpu_memory_utilization"] == 0.94
    free = failed(0.92, 256, 8192, "insufficient_free_memory")  # the device's own limit
    move = next_climb(space=SPACE, tried=[best, free])
    assert move is not None and move.params["gpu_memory_utilization"] == 0.91


def test_a_crash_under_load_is_no_ceiling_for_batches_holding_fewer_tokens() -> None:
    """Long prompts, a KV cache of a few requests: larger batched tokens (more activation
    memory profiled) leave a smaller KV cache, so fewer tokens run at the crash's level."""

    def running(p: Mapping[str, Value]) -> int:  # KV tokens: 2k a step, less 1 per batched
        steps = round((float(p["gpu_memory_utilization"]) - 0.85) / 0.01)
        return 2_000 * steps - int(p["max_num_batched_tokens"])

    best = ok(0.91, 8, 4096, 100.0)
    crash = failed(0.92, 8, 512, "crash_under_load")
    assert next_climb(space=SPACE, tried=[best, crash]) is None  # no model: a ceiling
    move = next_climb(space=SPACE, tried=[best, crash], running=running)
    assert move is not None and move.params["gpu_memory_utilization"] == 0.92  # its level first
    there = ok(0.92, 8, 4096, 101.0)  # served where the other crashed: on up
    move = next_climb(space=SPACE, tried=[best, crash, there], running=running)
    assert move is not None and move.params["gpu_memory_utilization"] == 0.95
    near = ok(0.91, 8, 1024, 100.0)  # 13.0k tokens at 0.92 against 13.5k: about as many
    assert next_climb(space=SPACE, tried=[near, crash], running=running) is None
    graphs = failed(0.92, 8, 512, "oom_cuda_graphs")  # a startup failure stays a ceiling
    assert next_climb(space=SPACE, tried=[best, graphs], running=running) is None


def test_a_crash_under_load_with_more_sequences_is_no_ceiling_for_fewer() -> None:
    """27 sequences crashed at 0.90 where 24 serve at 0.89 with their KV cache full: 24
    sequences at 0.90 hold a ninth fewer tokens, so the climb tries them at 0.90 (and no higher
    before they served)."""

    def running(p: Mapping[str, Value]) -> int:  # every sequence holds 3k tokens
        return 3_000 * int(p["max_num_seqs"])

    best = dataclasses.replace(ok(0.89, 24, 512, 100.0), peak_kv_pct=100.0, preemptions=4)
    crash = failed(0.90, 27, 512, "crash_under_load")
    move = next_climb(space=SPACE, tried=[best, crash], running=running)
    assert move is not None and move.params == {**best.params, "gpu_memory_utilization": 0.90}
    close = failed(0.90, 26, 512, "crash_under_load")  # 26 of 27: about as many tokens
    assert next_climb(space=SPACE, tried=[best, close], running=running) is None
    assert next_climb(space=SPACE, tried=[best, crash]) is None  # no model: a ceiling
    roomy = dataclasses.replace(best, peak_kv_pct=80.0, preemptions=0)  # more KV goes unused
    assert next_climb(space=SPACE, tried=[roomy, crash], running=running) is None


def test_the_memory_model_guess_is_tried_first_inside_the_open_interval() -> None:
    best = ok(0.90, 64, 2048, 100.0)
    move = next_climb(space=SPACE, tried=[best], expected=lambda params: 0.9671)
    assert move is not None and move.params["gpu_memory_utilization"] == 0.96
    below = next_climb(space=SPACE, tried=[best], expected=lambda params: 0.85)
    assert below is not None and below.params["gpu_memory_utilization"] == 0.91  # one step up


def test_no_climb_without_a_served_trial_or_a_tuned_memory_dimension() -> None:
    assert next_climb(space=SPACE, tried=[failed(0.9, 64, 2048, "oom_cuda_graphs")]) is None
    fixed = SearchSpace(dims=(Dim("gpu_memory_utilization", 0.9, 0.9, is_float=True),))
    p = {"gpu_memory_utilization": 0.9}
    assert next_climb(space=fixed, tried=[Tried(params=p, outcome="ok", value=1.0)]) is None


def test_lift_only_to_what_a_configuration_needing_as_much_served_at() -> None:
    seen = [ok(0.95, 128, 4096, 100.0), ok(0.97, 8, 512, 10.0)]
    proposal = {"gpu_memory_utilization": 0.80, "max_num_seqs": 64, "max_num_batched_tokens": 2048}
    assert lift(space=SPACE, tried=seen, params=proposal)["gpu_memory_utilization"] == 0.95
    larger = proposal | {"max_num_seqs": 200}
    assert lift(space=SPACE, tried=seen, params=larger) == larger  # nothing as large served
    high = proposal | {"gpu_memory_utilization": 0.96}
    assert lift(space=SPACE, tried=seen, params=high) == high  # never lowered


def test_local_moves_are_a_compass_search_on_the_batch_settings() -> None:
    best = ok(0.95, 64, 2048, 100.0)
    seen = [best, ok(0.90, 8, 512, 10.0)]
    rng = random.Random(3)
    up = {"max_num_seqs": 128, "max_num_batched_tokens": 4096}
    down = {"max_num_seqs": 32, "max_num_batched_tokens": 1024}
    for step in range(4):  # the four neighbours at factor 2 (larger first), then finer ones
        move = local_move(space=SPACE, tried=seen, rng=rng)
        assert move is not None and move.params["gpu_memory_utilization"] == 0.95
        changed = [k for k in up if move.params[k] != best.params[k]]
        assert len(changed) == 1
        assert move.params[changed[0]] == (up if step < 2 else down)[changed[0]]
        seen.append(Tried(params=move.params, outcome="ok", value=50.0))
    finer = local_move(space=SPACE, tried=seen, rng=rng)
    assert finer is not None and finer.params["max_num_seqs"] in (45, 64, 91)
    assert finer.params["max_num_batched_tokens"] >= finer.params["max_num_seqs"]


def test_a_full_kv_cache_sends_the_local_moves_down_first() -> None:
    p = {"gpu_memory_utilization": 0.95, "max_num_seqs": 64, "max_num_batched_tokens": 2048}
    full = Tried(params=p, outcome="ok", value=100.0, preemptions=31, peak_kv_pct=100.0)
    idle = Tried(params=p, outcome="ok", value=100.0, preemptions=0, peak_kv_pct=20.0)
    assert full.kv_pressure() == "full" and idle.kv_pressure() == "idle"
    assert Tried(params=p, outcome="ok").kv_pressure() is None  # /metrics unread
    rng = random.Random(3)
    for best, larger in ((full, False), (idle, True)):
        seen = [best]
        for _ in range(2):  # both neighbours at factor 2 in the preferred direction
            move = local_move(space=SPACE, tried=seen, rng=rng)
            assert move is not None
            grew = any(move.params[k] > p[k] for k in ("max_num_seqs", "max_num_batched_tokens"))
            assert grew is larger, move.why
            seen.append(Tried(params=move.params, outcome="ok", value=50.0))


def test_local_moves_skip_sequence_limits_above_what_ran_at_once() -> None:
    """24 sequences allowed, 17 ran at once at the peak: every limit of 17 or more runs alike
    (the KV cache or the load holds the batch back), so no local move goes from 18 to another
    such limit. Fewer sequences, and the batched tokens, are still moved; without vLLM's
    counters every neighbour is."""

    def moves(peak: int | None) -> list[dict[str, Value]]:
        best = dataclasses.replace(ok(0.96, 18, 1024, 100.0), peak_running=peak)
        seen = [best, dataclasses.replace(ok(0.96, 24, 1024, 99.0), peak_running=peak)]
        rng, out = random.Random(5), []
        while (move := local_move(space=SPACE, tried=seen, rng=rng)) is not None:
            out.append(dict(move.params))
            seen.append(Tried(params=move.params, outcome="ok", value=50.0))
        return out

    def seqs(found: list[dict[str, Value]]) -> set[int]:
        return {int(m["max_num_seqs"]) for m in found if m["max_num_batched_tokens"] == 1024}

    assert min(seqs(moves(17))) < 17 and max(seqs(moves(17))) < 17
    assert {int(m["max_num_batched_tokens"]) for m in moves(17)} >= {512, 2048}
    assert max(seqs(moves(None))) > 24  # counters unread: larger limits are tried


def test_requests_kept_waiting_below_max_num_seqs_count_as_a_full_kv_cache() -> None:
    # Long requests: 5 of 8 sequences ran, the rest waited, 91% of the cache in use (the free
    # 9% held less than one more request), no preemption.
    p = {"gpu_memory_utilization": 0.92, "max_num_seqs": 8, "max_num_batched_tokens": 2048}
    kept = Tried(p, "ok", 100.0, preemptions=0, peak_kv_pct=91.0, peak_running=5, peak_waiting=40)
    assert kept.kv_pressure() == "full"
    # all 8 ran: the sequences, not the cache, bound admission
    assert dataclasses.replace(kept, peak_running=8).kv_pressure() is None
    # nothing waited: the load, not the cache, bound it
    assert dataclasses.replace(kept, peak_waiting=0).kv_pressure() is None
    # a cache never half used did not bind anything
    assert dataclasses.replace(kept, peak_kv_pct=30.0).kv_pressure() == "idle"
    # fewer waited at once than ran: the scheduler's step (requests arriving one by one)
    assert dataclasses.replace(kept, peak_waiting=3).kv_pressure() is None
    # a cache at its limit binds only below max_num_seqs: all 8 running at 99% is the batch's
    near = dataclasses.replace(kept, peak_kv_pct=99.0, peak_waiting=0)
    assert near.kv_pressure() == "full"
    assert dataclasses.replace(near, peak_running=8).kv_pressure() is None
    assert dataclasses.replace(near, peak_running=8, preemptions=2).kv_pressure() == "full"
    move = local_move(space=SPACE, tried=[kept], rng=random.Random(1))
    assert move is not None
    assert move.params["max_num_batched_tokens"] == 1024, move.why


def test_a_crash_under_load_retreats_in_memory_with_the_same_batches() -> None:
    best = ok(0.94, 13, 1024, 100.0)
    top = ok(0.98, 13, 1024, 101.0)
    crash = failed(0.98, 40, 1024, "crash_under_load")
    move = retreat(space=SPACE, tried=[best, top, crash])
    assert move is not None and "retreat" in move.why
    # the same batches, halfway down to the highest level that served below the failure
    assert move.params == {**crash.params, "gpu_memory_utilization": 0.96}
    # once: the retreat itself is the last launch now, and it served
    assert retreat(space=SPACE, tried=[best, top, crash, ok(0.96, 40, 1024, 120.0)]) is None
    # nothing served below: a few steps down; request errors count as a failure under load
    errors = failed(0.90, 64, 2048, "request_errors")
    lower = retreat(space=SPACE, tried=[errors])
    assert lower is not None and lower.params["gpu_memory_utilization"] == 0.87
    # smaller batches than the best crashing: nothing to win back
    assert retreat(space=SPACE, tried=[best, failed(0.98, 8, 512, "crash_under_load")]) is None
    # a retreat that dies under load again steps down twice as far (exponentially), but not
    # below the level that served; below that, twice as far each time
    again = Tried(params=move.params, outcome="crash_under_load", source=move.why)
    further = retreat(space=SPACE, tried=[best, top, crash, again])
    assert further is not None and further.params == {
        **crash.params,
        "gpu_memory_utilization": 0.94,
    }
    third = Tried(params=further.params, outcome="crash_under_load", source=further.why)
    last = retreat(space=SPACE, tried=[best, top, crash, again, third])
    assert last is not None and last.params["gpu_memory_utilization"] == 0.90
    served = Tried(params=last.params, outcome="ok", value=90.0, source=last.why)
    assert retreat(space=SPACE, tried=[best, top, crash, again, third, served]) is None
    # a startup failure is the climb's business, not a retreat
    assert retreat(space=SPACE, tried=[best, failed(0.98, 40, 1024, "oom_cuda_graphs")]) is None


def test_a_crash_under_load_at_the_floor_halves_the_sequences() -> None:
    """No utilization is left below 0.70: the larger chunk that crashed there runs again with
    half the sequences (the runtime peak grows with the requests running), and again, while
    its batches are larger than the best's."""
    best = ok(0.70, 48, 1024, 100.0)
    crash = failed(0.70, 48, 8192, "crash_under_load")
    move = retreat(space=SPACE, tried=[best, crash])
    assert move is not None and move.params == {**crash.params, "max_num_seqs": 24}
    assert "at the floor" in move.why
    again = Tried(params=move.params, outcome="crash_under_load", source=move.why)
    half = retreat(space=SPACE, tried=[best, crash, again])
    assert half is not None and half.params["max_num_seqs"] == 12
    # as small as the best's batches once halved, or already launched: no move
    assert retreat(space=SPACE, tried=[best, failed(0.70, 96, 1024, "crash_under_load")]) is None
    assert retreat(space=SPACE, tried=[best, again, crash]) is None
    # above the floor the retreat steps down in memory, halfway to the level that served
    above = retreat(
        space=SPACE, tried=[ok(0.75, 48, 1024, 100.0), failed(0.8, 48, 8192, "crash_under_load")]
    )
    assert above is not None and above.params["gpu_memory_utilization"] == 0.77


def test_a_retreat_short_of_memory_bisects_then_halves_the_batched_tokens() -> None:
    crash = failed(0.96, 9, 4096, "crash_under_load")
    back = Tried(
        params={**crash.params, "gpu_memory_utilization": 0.90},
        outcome="no_kv_cache",
        source="retreat: gpu_memory_utilization 0.96 -> 0.9",
    )
    mid = retreat(space=SPACE, tried=[crash, back])
    assert mid is not None and mid.params["gpu_memory_utilization"] == 0.93
    assert mid.params["max_num_batched_tokens"] == 4096
    # adjacent levels: the same level with half the batched tokens
    crash = failed(0.91, 9, 4096, "crash_under_load")
    back = Tried(params={**crash.params, "gpu_memory_utilization": 0.90},
                 outcome="kv_too_small", source="retreat: …")  # fmt: skip
    half = retreat(space=SPACE, tried=[crash, back])
    assert half is not None and half.params == {**back.params, "max_num_batched_tokens": 2048}
    # a short failure the sampler proposed is not a retreat's
    assert retreat(space=SPACE, tried=[crash, failed(0.90, 9, 4096, "no_kv_cache")]) is None


def test_no_climb_or_lift_once_more_memory_served_slower() -> None:
    seen = [ok(0.85, 64, 2048, 100.0), ok(0.90, 64, 2048, 80.0)]
    assert next_climb(space=SPACE, tried=seen) is None
    proposal = {"gpu_memory_utilization": 0.75, "max_num_seqs": 32, "max_num_batched_tokens": 1024}
    assert lift(space=SPACE, tried=seen, params=proposal) == proposal
    # Other batch settings become the best: the climb tests them (the lift stays off).
    other = [*seen, ok(0.80, 32, 1024, 120.0)]
    move = next_climb(space=SPACE, tried=other)
    assert move is not None and move.params["max_num_seqs"] == 32
    assert move.params["gpu_memory_utilization"] > 0.80
    assert lift(space=SPACE, tried=other, params=proposal) == proposal


def test_repair_retries_a_kv_too_small_failure_at_the_length_vllm_estimated() -> None:
    space = SearchSpace(dims=(*SPACE.dims, Dim("max_model_len", 32768, 131072)))
    p = {
        "gpu_memory_utilization": 0.9,
        "max_num_seqs": 256,
        "max_num_batched_tokens": 2048,
        "max_model_len": 131072,
    }
    failed = Tried(params=p, outcome="kv_too_small", estimated_max_model_len=40007)
    move = repair(space=space, tried=[failed])
    assert move is not None and move.params == p | {"max_model_len": 40000}
    short = Tried(params=p, outcome="kv_too_small", estimated_max_model_len=20000)
    # Below the range: its low end, at the model's edge (without a guess: vLLM's 0.9)
    move = repair(space=space, tried=[short], expected=lambda params: 0.9681)
    assert move is not None
    assert move.params == p | {"max_model_len": 32768, "gpu_memory_utilization": 0.96}
    assert repair(space=space, tried=[short]) is None  # already at 0.9: nothing to raise
    low = Tried(
        params=p | {"gpu_memory_utilization": 0.8},
        outcome="kv_too_small",
        estimated_max_model_len=20000,
    )
    move = repair(space=space, tried=[low])
    assert move is not None and move.params["gpu_memory_utilization"] == 0.9
    served = Tried(params=p | {"max_model_len": 40000}, outcome="ok", value=1.0)
    assert repair(space=space, tried=[failed, served]) is None
    # After a boot: only the last launch, when it was one of the study's own larger moves.
    bigger = Tried(
        params=p | {"max_num_seqs": 512, "max_model_len": 65536},
        outcome="kv_too_small",
        estimated_max_model_len=50000,
        source="fill: …",
    )
    move = repair(space=space, tried=[served, bigger])
    assert move is not None and move.params["max_model_len"] == 50000
    sampled = Tried(params=bigger.params, outcome="kv_too_small", estimated_max_model_len=50000)
    assert repair(space=space, tried=[served, sampled]) is None


def test_an_opt_in_switch_must_match_to_lift_or_to_be_a_ceiling() -> None:
    switch = {"enable_prefix_caching": 1}
    seen = [
        Tried(params=dict(ok(0.95, 128, 4096, 100.0).params) | switch, outcome="ok", value=100.0)
    ]
    proposal = {"gpu_memory_utilization": 0.80, "max_num_seqs": 64, "max_num_batched_tokens": 2048}
    assert lift(space=SPACE, tried=seen, params=proposal | {"enable_prefix_caching": 0}) == (
        proposal | {"enable_prefix_caching": 0}
    )
    lifted = lift(space=SPACE, tried=seen, params=proposal | switch)
    assert lifted["gpu_memory_utilization"] == 0.95


def test_fill_sets_max_num_seqs_to_the_requests_the_kv_cache_holds() -> None:
    best = Tried(
        params=ok(0.90, 16, 4096, 100.0).params, outcome="ok", value=100.0, kv_cache_tokens=40_000
    )
    move = fill(space=SPACE, tried=[best], request_tokens=500, most=1000)
    assert move is not None and move.params["max_num_seqs"] == 80
    assert move.params["gpu_memory_utilization"] == 0.90
    capped = fill(space=SPACE, tried=[best], request_tokens=500, most=64)
    assert capped is not None and capped.params["max_num_seqs"] == 64  # the requests in flight
    # The model says the larger batches start only up to 0.87 and hold 30,000 tokens there
    # (and, as logged, 40,000 at 0.90).
    move = fill(
        space=SPACE,
        tried=[best],
        request_tokens=500,
        most=1000,
        expected=lambda p: 0.875,
        capacity=lambda p: 30_000 if float(p["gpu_memory_utilization"]) < 0.9 else 40_000,
    )
    assert move is not None and move.params["gpu_memory_utilization"] == 0.87
    assert move.params["max_num_seqs"] == 60
    there = Tried(
        params=dict(best.params) | {"max_num_seqs": 82},
        outcome="ok",
        value=100.0,
        kv_cache_tokens=40_000,
    )
    assert fill(space=SPACE, tried=[there], request_tokens=500, most=1000) is None


def test_fill_finds_the_count_whose_own_kv_cache_holds_it() -> None:
    """Each sequence more takes 1,100 KV tokens' worth of memory (CUDA graphs, activations): 56,000
    tokens at 70 sequences hold 137 requests of 409 tokens, but 137 sequences leave almost no KV
    cache. The most that their own cache holds: 88 (56,000 + 1,100 x 18 >= 88 x 409)."""
    best = Tried(
        params=ok(0.76, 70, 2048, 100.0).params, outcome="ok", value=100.0, kv_cache_tokens=56_000
    )

    def predicted(p: Mapping[str, Value]) -> int:
        return 56_000 - 1_100 * (int(p["max_num_seqs"]) - 70)

    move = fill(space=SPACE, tried=[best], request_tokens=409, most=160, capacity=predicted)
    assert move is not None and move.params["max_num_seqs"] == 88
    # The model's error at the best carries over: it logged 5,000 tokens more than predicted.
    logged = dataclasses.replace(best, kv_cache_tokens=61_000)
    move = fill(space=SPACE, tried=[logged], request_tokens=409, most=160, capacity=predicted)
    assert move is not None and move.params["max_num_seqs"] == 91  # 5,000 more: 3 more


def test_fill_never_goes_above_the_requests_in_flight() -> None:
    """512 sequences with 256 requests in flight run 256 at most: where the KV cache holds 449
    requests, the fill goes to 256 (more never run, and each costs CUDA-graph memory), not to
    449; with 4x longer requests (112 held) it goes to 112."""
    space = SearchSpace(dims=(SPACE["gpu_memory_utilization"], Dim("max_num_seqs", 8, 1024)))
    params = {"gpu_memory_utilization": 0.9, "max_num_seqs": 512}
    best = Tried(params=params, outcome="ok", value=1.0, kv_cache_tokens=449 * 125)

    def held(p: Mapping[str, Value]) -> int:
        return 449 * 125

    move = fill(space=space, tried=[best], request_tokens=125, most=256, capacity=held)
    assert move is not None and move.params["max_num_seqs"] == 256
    move = fill(space=space, tried=[best], request_tokens=500, most=256, capacity=held)
    assert move is not None and move.params["max_num_seqs"] == 112  # 449 x 125 / 500


def test_fill_takes_a_step_below_the_compass_where_it_saves_a_wave() -> None:
    """147 sequences run 160 requests in two waves, the second of 13 nearly empty; where the
    KV cache holds 170 requests the fill goes to 160, one wave, though 160 / 147 is below the
    compass's finest step. 150 -> 158 of 300 requests in flight (two waves either way): no."""
    space = SearchSpace(dims=(SPACE["gpu_memory_utilization"], Dim("max_num_seqs", 8, 1024)))
    params = {"gpu_memory_utilization": 0.93, "max_num_seqs": 147}
    best = Tried(params=params, outcome="ok", value=1.0, kv_cache_tokens=170 * 450)
    move = fill(space=space, tried=[best], request_tokens=450, most=160)
    assert move is not None and move.params["max_num_seqs"] == 160
    there = Tried(params | {"max_num_seqs": 150}, "ok", 1.0, kv_cache_tokens=158 * 450)
    assert fill(space=space, tried=[there], request_tokens=450, most=300) is None
    assert fill(space=space, tried=[there], request_tokens=450, most=158) is not None


def test_fill_lowers_max_model_len_to_what_the_larger_batches_leave() -> None:
    space = SearchSpace(dims=(*SPACE.dims, Dim("max_model_len", 32768, 131072)))
    params = dict(ok(0.95, 16, 4096, 1.0).params) | {"max_model_len": 60000}
    best = Tried(params=params, outcome="ok", value=1.0, kv_cache_tokens=64_000)
    move = fill(
        space=space,
        tried=[best],
        request_tokens=544,
        most=1000,
        capacity=lambda p: 50_000 if p["max_num_seqs"] > 16 else 64_000,
    )
    assert move is not None and move.params["max_num_seqs"] == 91
    assert move.params["max_model_len"] == 50_000 // 16 * 16


def test_fill_tries_configurations_near_the_best_once_each() -> None:
    a = Tried(
        params=ok(0.9, 80, 8192, 1.0).params, outcome="ok", value=100.0, kv_cache_tokens=40_000
    )  # already full
    b = Tried(
        params=ok(0.9, 16, 2048, 1.0).params, outcome="ok", value=97.0, kv_cache_tokens=48_000
    )  # within the noise of the best
    far = Tried(
        params=ok(0.9, 8, 512, 1.0).params, outcome="ok", value=50.0, kv_cache_tokens=50_000
    )
    move = fill(space=SPACE, tried=[a, b, far], request_tokens=500, most=1000)
    assert move is not None and move.params == dict(b.params) | {"max_num_seqs": 96}
    done = [a, b, far, Tried(params=move.params, outcome="ok", value=99.0)]
    assert fill(space=SPACE, tried=done, request_tokens=500, most=1000) is None
    # The same batch setting launched at another utilization is known too.
    elsewhere = dict(move.params) | {"gpu_memory_utilization": 0.85}
    done = [a, b, far, Tried(params=elsewhere, outcome="ok", value=90.0)]
    assert fill(space=SPACE, tried=done, request_tokens=500, most=1000) is None


def test_moves_start_from_the_most_memory_among_equal_results() -> None:
    low, high = ok(0.80, 16, 2048, 100.0), ok(0.95, 16, 2048, 99.5)  # within 1%: equal
    rng = random.Random(0)
    move = local_move(space=SPACE, tried=[low, high], rng=rng)
    assert move is not None and move.params["gpu_memory_utilization"] == 0.95


def test_the_load_counts_prompt_output_and_image_tokens() -> None:
    text = [Request(prompt=[1] * 500, messages=None, max_tokens=44, ignore_eos=True)] * 3
    assert Load.of(text, concurrency=None, image_tokens=576) == Load(544, 3, prompt_tokens=500)
    assert Load.of(text, concurrency=2, image_tokens=576).in_flight == 2
    parts: list[object] = [
        {"type": "image_url", "image_url": {"url": "data:"}},
        {"type": "text", "text": "x" * 400},
    ]
    chat = [Request(prompt=None, messages=[{"role": "user", "content": parts}], max_tokens=24,
                    ignore_eos=True)]  # fmt: skip
    assert Load.of(chat, concurrency=None, image_tokens=576).request_tokens == 576 + 100 + 24
