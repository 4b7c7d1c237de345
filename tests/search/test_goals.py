"""Goals, choosing among repeats and the Pareto front, profile variants, goodput, arrivals,
pruning and stagnation: pure parts, no engine."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, cast

import optuna
import pytest

from autotune.engine.outcome import StartupInfo
from autotune.errors import UserError
from autotune.load.arrivals import arrivals
from autotune.load.metrics import Metrics, RequestRecord, goodput
from autotune.profiles.store import Profile
from autotune.search import tell
from autotune.search.finalize import finalists
from autotune.search.goal import Goal, apply_budget, parse_budget, parse_slos, reserved_gib
from autotune.search.pareto import balanced, pareto_front
from autotune.search.ranking import candidates, rank
from autotune.search.space import Dim, SearchSpace


def metrics_with(**values: float) -> dict[str, Any]:
    """A complete metrics record (as a benchmark stores it), zero but for ``values``."""
    zero: dict[str, Any] = {f.name: 0 for f in dataclasses.fields(Metrics)}
    return Metrics(**(zero | values)).to_dict()


@dataclass
class Run:
    """A finished trial as choosing reads it."""

    number: int
    args: dict[str, Any]
    tput: float
    reserved: float = 10.0
    ok: bool = True
    violated: bool = False
    values: list[float] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = self.values or [self.tput]

    @property
    def user_attrs(self) -> dict[str, Any]:
        return {
            "launched": True,
            "outcome": "ok" if self.ok else "crash_under_load",
            "vllm_args": self.args,
            "metrics": metrics_with(output_throughput=self.tput),
            "reserved_gib": self.reserved,
        }

    @property
    def constraints(self) -> dict[str, float]:
        return {"infeasible": 1.0 if self.violated else -1.0}


def test_goal_values_constraints_and_directions() -> None:
    slo = Goal(slos=parse_slos(("tpot_p95_ms=10", "ttft-p95-ms=500")), total_gib=24)
    metrics = {"tpot_ms_p95": 12.0, "ttft_ms_p95": 100.0, "output_throughput": 900.0}
    c = slo.constraints(metrics, ok=True)
    assert c["infeasible"] < 0 and c["slo"] == pytest.approx(0.2)
    assert slo.missed(metrics) == ["tpot_p95_ms 12.0 > 10"]
    assert slo.constraints(None, ok=False) == {"infeasible": 1.0, "slo": 1.0}
    mem = Goal(kind="memory", min_throughput=1000, total_gib=24)
    assert mem.directions == ("minimize",) and mem.worst() == [24]
    assert mem.constraints(metrics, ok=True)["min_throughput"] == pytest.approx(0.1)
    pareto = Goal(kind="pareto", total_gib=24)
    assert pareto.values(throughput=5.0, goodput=None, reserved_gib=7.0) == [5.0, 7.0]
    assert pareto.worst() == [0.0, 24]
    assert Goal(kind="goodput", slos=(("e2e_p99_ms", 1.0),)).name() == "goodput-e2e_p99_ms=1"


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (lambda: parse_slos(("ttft=5",)), "NAME=MILLISECONDS"),
        (lambda: parse_slos(("ttft_p95_ms=-1",)), "positive"),
        (lambda: parse_budget("lots", total_gib=24), "fraction"),
        (lambda: parse_budget("30GiB", total_gib=24), "more than"),
        (lambda: Goal(kind="memory"), "--min-throughput"),
        (lambda: Goal(kind="goodput"), "--slo"),
        (lambda: Goal(kind=cast(Any, "speed")), "--objective"),
    ],
)
def test_bad_goal_input(call: Any, text: str) -> None:
    with pytest.raises(UserError, match=text):
        call()


def test_budget_re_ranges_memory() -> None:
    assert parse_budget("12GiB", total_gib=24) == 0.5 and parse_budget("0.6", total_gib=24) == 0.6
    space = SearchSpace(dims=(Dim("gpu_memory_utilization", 0.7, 0.98, is_float=True),))
    moved = apply_budget(space, budget=0.605, total_gib=24)["gpu_memory_utilization"]
    assert (moved.low, moved.high) == (0.32, 0.6)
    with pytest.raises(UserError, match="--memory-budget"):
        apply_budget(space, budget=0.6, total_gib=24, user_range=True)
    assert reserved_gib({"gpu_memory_utilization": 0.5}, StartupInfo(), total_gib=24) == (
        12.0,
        "gpu_memory_utilization x GPU memory",
    )
    logged = reserved_gib({}, StartupInfo(utilization=0.5, total_gib=22.0), total_gib=24)
    assert logged[0] == 11.0 and "startup log" in logged[1]


def test_repeats_grouped_and_chosen_on_the_worst_run() -> None:
    a, b = {"max_num_seqs": 64}, {"max_num_seqs": 32}
    runs = [Run(0, a, 100.0), Run(1, b, 90.0), Run(2, a, 80.0), Run(3, b, 88.0)]
    goal = Goal()
    worst = rank(candidates(runs, goal=goal, statistic="worst"), goal=goal, noise=0.0,
                 repeats=2, most_images=False)  # fmt: skip
    assert worst[0].args == b and worst[0].value == 88.0 and worst[0].chosen.number == 3
    assert worst[1].spread()["output_throughput"] == [100.0, 80.0]
    crashed = [*runs, Run(4, b, 0.0, ok=False)]  # one crash makes the configuration infeasible
    left = rank(candidates(crashed, goal=goal, statistic="worst"), goal=goal, noise=0.0,
                repeats=2, most_images=False)  # fmt: skip
    assert [c.args for c in left] == [a]
    single = [Run(5, {"max_num_seqs": 8}, 500.0)]  # one run only: after the re-measured ones
    mixed = rank(candidates([*runs, *single], goal=goal, statistic="median"), goal=goal,
                 noise=0.0, repeats=2, most_images=False)  # fmt: skip
    assert mixed[-1].args == {"max_num_seqs": 8}


def test_median_of_three_ignores_one_slow_outlier() -> None:
    a, b = {"max_num_seqs": 64}, {"max_num_seqs": 32}
    # a is better (100 vs 90) but had one slow run on a loaded machine
    runs = [Run(0, a, 100.0), Run(1, a, 62.0), Run(2, a, 101.0)]
    runs += [Run(3, b, 90.0), Run(4, b, 91.0), Run(5, b, 89.0)]
    goal = Goal()
    median = rank(candidates(runs, goal=goal, statistic="median"), goal=goal, noise=0.0,
                  repeats=3, most_images=False)  # fmt: skip
    assert median[0].args == a and median[0].value == 100.0
    worst = rank(candidates(runs, goal=goal, statistic="worst"), goal=goal, noise=0.0,
                 repeats=3, most_images=False)  # fmt: skip
    assert worst[0].args == b  # the worst run alone is fooled by the outlier


def test_indistinguishable_configurations_prefer_context_then_headroom() -> None:
    goal = Goal()
    fast = {"gpu_memory_utilization": 0.95, "max_model_len": 4096}
    roomy = {"gpu_memory_utilization": 0.90, "max_model_len": 4096}
    longer = {"gpu_memory_utilization": 0.95, "max_model_len": 8192}

    def ranked(runs: list[Run], noise: float = 0.05) -> list[dict[str, Any]]:
        found = rank(candidates(runs, goal=goal, statistic="median"), goal=goal, noise=noise,
                     repeats=2, most_images=False)  # fmt: skip
        return [c.args for c in found]

    # within 5% and overlapping runs: the one reserving less memory wins
    overlap = [Run(0, fast, 100.0, 76.0), Run(1, fast, 96.0, 76.0)]
    overlap += [Run(2, roomy, 97.0, 72.0), Run(3, roomy, 95.0, 72.0)]
    assert ranked(overlap)[0] == roomy
    # the same medians, but every run of one beats every run of the other: not equal
    apart = [Run(0, fast, 99.0, 76.0), Run(1, fast, 98.5, 76.0)]
    apart += [Run(2, roomy, 97.0, 72.0), Run(3, roomy, 96.0, 72.0)]
    assert ranked(apart)[0] == fast
    # beyond the noise band the faster one wins whatever its reservation
    assert ranked(overlap, noise=0.01)[0] == fast
    # the longer context beats headroom among equals
    ctx = [*overlap, Run(4, longer, 95.5, 76.0), Run(5, longer, 97.5, 76.0)]
    assert ranked(ctx)[0] == longer


def test_finalists_are_the_best_value_and_the_ranking_s_first() -> None:
    goal = Goal()
    fast = {"gpu_memory_utilization": 0.95, "max_model_len": 4096}
    longer = {"gpu_memory_utilization": 0.95, "max_model_len": 8192}
    third = {"gpu_memory_utilization": 0.9, "max_model_len": 4096}
    runs = [Run(0, fast, 100.0), Run(1, longer, 97.0), Run(2, third, 96.0)]
    ranked = rank(candidates(runs, goal=goal, statistic="median"), goal=goal, noise=0.05,
                  repeats=1, most_images=False)  # fmt: skip
    assert ranked[0].args == longer  # the longer context first among equals
    picked = finalists(ranked, goal=goal, count=2)
    assert [c.args for c in picked] == [longer, fast]  # the fastest is re-measured too
    assert [c.args for c in finalists(ranked, goal=goal, count=3)] == [longer, fast, third]
    assert [c.args for c in finalists(ranked, goal=goal, count=1)] == [longer]


def test_pareto_front_and_balanced_pick() -> None:
    goal = Goal(kind="pareto", total_gib=24)
    points = [(100.0, 10.0), (200.0, 14.0), (150.0, 16.0), (300.0, 20.0), (300.0, 22.0)]
    runs = [
        Run(i, {"gpu_memory_utilization": m / 24}, t, reserved=m, values=[t, m])
        for i, (t, m) in enumerate(points)
    ]
    front = pareto_front(candidates(runs, goal=goal, statistic="worst"))
    assert [(c.throughput, c.reserved_gib) for c in front] == [
        (100.0, 10.0),
        (200.0, 14.0),
        (300.0, 20.0),
    ]
    assert balanced(front).reserved_gib == 14.0


def test_profile_variants_and_version_one_still_loads() -> None:
    base: dict[str, Any] = {
        "schema_version": 1, "model": {"name": "m"}, "hardware": {"key": "h"},
        "vllm_version": "0.33.0", "workload": {"signature": "in1-out1"}, "objective": "pareto",
        "vllm_args": {"gpu_memory_utilization": 0.7}, "extra_args": [], "metrics": {},
        "startup": {}, "provenance": {},
        "parallel": {"tensor_parallel_size": 1, "pipeline_parallel_size": 1}, "constraints": {},
    }  # fmt: skip
    assert Profile.from_dict(base, source="old.yaml").variants == []
    with pytest.raises(UserError, match="schema_version 2"):
        Profile.from_dict({**base, "variants": []}, source="old.yaml")
    small = {"picks": ["memory"], "vllm_args": {"gpu_memory_utilization": 0.5}, "memory": {}}
    fast = {"picks": ["throughput", "balanced"], "vllm_args": {"gpu_memory_utilization": 0.9}}
    new = Profile.from_dict({**base, "schema_version": 2, "variants": [small, fast]}, source="n")
    assert new.variant("memory").vllm_args == {"gpu_memory_utilization": 0.5}
    assert new.variant("balanced").vllm_args == {"gpu_memory_utilization": 0.9}
    bad = {"vllm_args": {"trust_remote_code": True}}
    with pytest.raises(UserError, match="variants"):
        Profile.from_dict({**base, "schema_version": 2, "variants": [bad]}, source="n")


def test_goodput_counts_requests_meeting_every_slo() -> None:
    def rec(ttft: float, e2e: float) -> RequestRecord:
        return RequestRecord(True, 10, 11, 0.0, ttft, (0.01,) * 10, e2e, None, 200)

    records = [rec(0.1, 0.2), rec(0.5, 0.6), rec(0.1, 2.0)]
    assert goodput(records, duration_s=2.0, slos={"ttft_ms_p95": 200}) == 1.0
    assert goodput(records, duration_s=2.0, slos={"ttft_ms_p95": 200, "e2e_ms_p99": 1000}) == 0.5


def test_poisson_arrivals_are_seeded() -> None:
    times = arrivals(2000, rate=10.0, seed=3)
    assert times == arrivals(2000, rate=10.0, seed=3) and times[0] == 0.0
    assert 180 < times[-1] < 220  # about 2000 / 10 seconds
    assert arrivals(5, rate=None, seed=0) == []


def test_stagnation_and_margin_pruner() -> None:
    study = optuna.create_study(direction="maximize")
    for value in (100.0, 120.0, 121.0, 120.5, 119.0):
        trial = study.ask()
        trial.set_user_attr("launched", True)
        trial.set_constraint("infeasible", -1.0)
        trial.report(value, 2)
        study.tell(trial, value)
    assert tell.stagnated(study, patience=3, threshold=0.02)
    assert not tell.stagnated(study, patience=3, threshold=0.0)
    pruner = tell.MarginPruner(margin=0.25, n_startup_trials=5, n_warmup_steps=2)
    slow = study.ask()
    slow.report(80.0, 2)
    assert pruner.prune(study, study.trials[slow.number])
    slow.report(110.0, 3)  # no completed trial reported step 3: nothing to compare with
    assert not pruner.prune(study, study.trials[slow.number])
