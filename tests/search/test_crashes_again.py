"""A crash under load predicts the same crash for configurations holding as many running tokens
at the same or a higher utilization (``search.moves.retreat.crashes_again``)."""

from __future__ import annotations

from collections.abc import Mapping

from autotune.engine.defaults import Value
from autotune.search.moves.edge import Tried
from autotune.search.moves.retreat import crashes_again
from tests.search.test_edge import SPACE


def running(params: Mapping[str, Value]) -> int:
    """A toy memory model: each sequence holds 1000 tokens; the KV cache grows with the
    utilization and shrinks with the batched tokens (activation memory)."""
    kv = int((float(params["gpu_memory_utilization"]) - 0.70) * 1_000_000)
    kv -= 20 * int(params["max_num_batched_tokens"])
    return min(int(params["max_num_seqs"]) * 1000, kv)


def p(util: float, seqs: int, tokens: int, **more: Value) -> dict[str, Value]:
    return {
        "gpu_memory_utilization": util,
        "max_num_seqs": seqs,
        "max_num_batched_tokens": tokens,
        **more,
    }


CRASH = Tried(p(0.90, 64, 2048), "crash_under_load")  # 64 sequences, 64000 tokens running


def why(params: dict[str, Value], tried: list[Tried] | None = None) -> str | None:
    return crashes_again(
        space=SPACE, tried=[CRASH] if tried is None else tried, params=params, running=running
    )


def test_as_many_tokens_running_at_or_above_a_crash_crash_again() -> None:
    # smaller batched tokens at a higher utilization: a larger KV cache, the same 64 running
    reason = why(p(0.92, 64, 1024))
    assert reason is not None and reason.startswith("predicted crash_under_load:"), reason
    assert why(p(0.90, 128, 2048)) is not None  # more sequences at the same level


def test_what_holds_fewer_tokens_or_sits_lower_is_not_predicted() -> None:
    assert why(p(0.88, 64, 2048)) is None  # more room outside the KV cache
    assert why(p(0.92, 32, 1024)) is None  # fewer sequences: retreat's and the fill's business
    assert why(p(0.92, 128, 8192)) is None  # large batched tokens: 56160 tokens running
    switched = Tried(p(0.90, 64, 2048, enable_prefix_caching=False), "crash_under_load")
    assert why(p(0.92, 64, 1024, enable_prefix_caching=True), [switched]) is None  # other switch
    served = Tried(p(0.90, 64, 2048), "ok", 10.0)
    assert why(p(0.92, 64, 1024), [served]) is None  # only crashes under load count
    assert crashes_again(space=SPACE, tried=[CRASH], params=p(0.92, 64, 1024), running=None) is None
