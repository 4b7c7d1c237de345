"""``--tune prefix-caching``: on and off measured equal (within the noise) rank prefix caching on
first, vLLM's default; a clearly faster off still wins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autotune.search.goal import Goal
from autotune.search.ranking import candidates, prefix_caching_on, rank
from tests.search.test_goals import Run

BASE = {"gpu_memory_utilization": 0.9, "max_model_len": 4096}
ON = BASE | {"enable_prefix_caching": True}
OFF = BASE | {"enable_prefix_caching": False}


def ranked(runs: Sequence[Run], *, noise: float, repeats: int = 1) -> list[dict[str, Any]]:
    goal = Goal()
    found = rank(candidates(runs, goal=goal, statistic="median"), goal=goal, noise=noise,
                 repeats=repeats, most_images=False)  # fmt: skip
    return [c.args for c in found]


def test_equal_measurements_prefer_prefix_caching_on() -> None:
    runs = [Run(0, OFF, 101.0), Run(1, ON, 99.0)]  # off measured 2% faster: inside 5% noise
    assert ranked(runs, noise=0.05) == [ON, OFF]
    assert ranked(runs, noise=0.01) == [OFF, ON]  # outside the noise the faster one wins
    assert ranked([Run(0, ON, 80.0), Run(1, OFF, 100.0)], noise=0.05)[0] == OFF


def test_context_and_headroom_still_come_first() -> None:
    longer_off = OFF | {"max_model_len": 8192}
    assert ranked([Run(0, ON, 100.0), Run(1, longer_off, 99.0)], noise=0.05)[0] == longer_off
    roomy_off = [Run(0, ON, 100.0, reserved=76.0), Run(1, OFF, 99.0, reserved=72.0)]
    assert ranked(roomy_off, noise=0.05)[0] == OFF


def test_reservations_within_3_percent_are_equal_headroom() -> None:
    """0.4 GiB less of 39 GiB is no headroom worth a slower configuration: the next keys decide
    (here the value); 3 GiB less is."""
    high, low = BASE | {"gpu_memory_utilization": 0.98}, BASE | {"gpu_memory_utilization": 0.97}
    close = [Run(0, high, 100.0, reserved=39.2), Run(1, low, 98.0, reserved=38.8)]
    assert ranked(close, noise=0.05) == [high, low]
    roomy = [Run(0, high, 100.0, reserved=39.2), Run(1, low, 98.0, reserved=36.2)]
    assert ranked(roomy, noise=0.05) == [low, high]


def test_absent_means_vllm_s_default_on() -> None:
    assert prefix_caching_on(BASE) and prefix_caching_on(ON)
    assert not prefix_caching_on(OFF)


@dataclass
class Preempted(Run):
    """A run whose benchmark saw vLLM preempt ``preemptions`` requests and run ``running`` at
    once at its peak."""

    preemptions: int = 0
    running: int | None = None
    kv_pct: float | None = None  # the KV cache's use at the peak

    @property
    def user_attrs(self) -> dict[str, Any]:
        extra = {"preemptions": self.preemptions, "peak_requests_running": self.running}
        return super().user_attrs | extra | {"peak_kv_cache_usage_pct": self.kv_pct}


def test_equal_measurements_prefer_no_preemptions_after_context_headroom_and_caching() -> None:
    small = BASE | {"max_num_batched_tokens": 724}
    large = BASE | {"max_num_batched_tokens": 2048}
    runs = [Preempted(0, large, 101.0, preemptions=16), Preempted(1, small, 99.0)]
    assert ranked(runs, noise=0.05) == [small, large]  # 2% apart: inside the noise
    assert ranked(runs, noise=0.01) == [large, small]  # outside it the faster one wins
    roomy = [Preempted(0, large, 100.0, reserved=9.0), Preempted(1, small, 99.0, preemptions=16)]
    assert ranked(roomy, noise=0.05)[0] == large  # more headroom first
    # ... but reserving less while preempting is memory it needed, not headroom
    needy = [Preempted(0, large, 100.0, preemptions=16, reserved=9.0), Preempted(1, small, 99.0)]
    assert ranked(needy, noise=0.05)[0] == small
    full = [Preempted(0, large, 99.0, reserved=9.0, kv_pct=96.5), Preempted(1, small, 100.0)]
    assert ranked(full, noise=0.05)[0] == small  # its KV cache 96.5% used at the peak: as needy
    used = [Preempted(0, large, 99.0, reserved=9.0, kv_pct=70.0), Preempted(1, small, 100.0)]
    assert ranked(used, noise=0.05)[0] == large
    off = small | {"enable_prefix_caching": False}
    caching = [Preempted(0, large, 100.0, preemptions=16), Preempted(1, off, 99.0)]
    assert ranked(caching, noise=0.05)[0] == large  # prefix caching on first


def test_equal_measurements_prefer_more_requests_running_at_once() -> None:
    """Neither preempted: 96 sequences ran 96 at once, 76 ran 76; within the noise the larger
    batch wins (decode serves it at nearly one step's cost), and a clearly faster one still
    wins. No preemptions come first: 96 running with 16 preemptions loses to 76 with none."""
    more = BASE | {"max_num_seqs": 96}
    fewer = BASE | {"max_num_seqs": 76}
    runs = [Preempted(0, fewer, 101.0, running=76), Preempted(1, more, 98.0, running=96)]
    assert ranked(runs, noise=0.05) == [more, fewer]
    assert ranked(runs, noise=0.01) == [fewer, more]
    preempting = [Preempted(0, fewer, 98.0, running=76),
                  Preempted(1, more, 101.0, preemptions=16, running=96)]  # fmt: skip
    assert ranked(preempting, noise=0.05) == [fewer, more]
