"""``overfill``: where a KV cache sized to whole requests bound (full at the peak, nothing
preempted, every sequence running), one launch at the requests it holds at their mean
footprint (the prompt and half the output)."""

from __future__ import annotations

from typing import Any

from autotune.search.moves.edge import Tried
from autotune.search.moves.load_shape import Load
from autotune.search.moves.overfill import overfill
from tests.search.test_edge import SPACE

BEST: dict[str, Any] = {
    "gpu_memory_utilization": 0.97, "max_num_seqs": 11, "max_num_batched_tokens": 1024,
}  # fmt: skip


def served(**changes: Any) -> Tried:
    """The best: 11 sequences, a 4,750-token cache 98% used at the peak, nothing preempted."""
    fields: dict[str, Any] = dict(
        params=BEST, outcome="ok", value=100.0, kv_cache_tokens=4750, preemptions=0,
        peak_kv_pct=98.0, peak_running=11, peak_waiting=100,
    )  # fmt: skip
    return Tried(**(fields | changes))


def move(*tried: Tried, most: int = 160) -> dict[str, Any] | None:
    load = Load(request_tokens=420, in_flight=most, prompt_tokens=240)
    found = overfill(space=SPACE, tried=tried, load=load)
    return None if found is None else dict(found.params)


def test_a_full_cache_without_preemptions_runs_requests_at_half_their_output() -> None:
    # 4,750 tokens / (240 + 180 / 2) = 14.4: 14 sequences, the other settings kept
    assert move(served()) == BEST | {"max_num_seqs": 14}
    assert move(served(), most=11) is None  # no more than the requests in flight


def test_no_overfill_where_the_cache_did_not_bind_or_requests_were_preempted() -> None:
    assert move(served(preemptions=3)) is None
    assert move(served(peak_kv_pct=60.0)) is None
    assert move(served(peak_running=9)) is None  # the batch never filled


def test_once_per_batch_setting_and_not_where_as_many_failed_for_memory() -> None:
    ran = Tried(params=BEST | {"max_num_seqs": 14}, outcome="ok", value=90.0)
    assert move(served(), ran) is None
    crashed = Tried(params=BEST | {"max_num_seqs": 13}, outcome="crash_under_load")
    assert move(served(), crashed) is None
