"""``--tune prefix-caching``: on and off measured equal (within the noise) rank prefix caching on
first, vLLM's default; a clearly faster off still wins."""

from __future__ import annotations

from typing import Any

from autotune.search.goal import Goal
from autotune.search.ranking import candidates, prefix_caching_on, rank
from tests.search.test_goals import Run

BASE = {"gpu_memory_utilization": 0.9, "max_model_len": 4096}
ON = BASE | {"enable_prefix_caching": True}
OFF = BASE | {"enable_prefix_caching": False}


def ranked(runs: list[Run], *, noise: float, repeats: int = 1) -> list[dict[str, Any]]:
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


def test_absent_means_vllm_s_default_on() -> None:
    assert prefix_caching_on(BASE) and prefix_caching_on(ON)
    assert not prefix_caching_on(OFF)
