"""The moves for studies where little serves (autotune/search/moves/rescue.py, retreat.py,
kv_fit.py, edge.py) and the launch reserve held only for finalists that exist (finalize)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune.engine.launcher import ArgValue
from autotune.engine.outcome import Outcome
from autotune.search import study as st
from autotune.search.finalize import Finish, finalists, remeasure, reserve, search
from autotune.search.goal import Goal
from autotune.search.moves.edge import Tried, next_climb
from autotune.search.moves.kv_fit import fill
from autotune.search.moves.rescue import rescue, starve
from autotune.search.moves.retreat import retreat
from autotune.search.ranking import Candidate
from autotune.trial.runner import TrialResult
from tests.search.test_edge import SPACE, failed, ok
from tests.search.test_noise_moves import Scripted
from tests.search.test_remeasure import DEFAULTS, Quiet, Recording, Screen, metrics
from tests.search.test_remeasure import SPACE as STUDY_SPACE


def test_rescue_first_runs_the_smallest_batches_where_the_defaults_failed() -> None:
    defaults = failed(0.90, 256, 2048, "oom_cuda_graphs")
    move = rescue(space=SPACE, tried=[defaults])
    assert move is not None and move.why.startswith("rescue:")
    assert move.params == {
        "gpu_memory_utilization": 0.90,
        "max_num_seqs": 8,
        "max_num_batched_tokens": 512,
    }


def test_rescue_bisects_between_short_of_memory_and_no_room_outside() -> None:
    tried = [failed(0.90, 256, 2048, "no_kv_cache"), failed(0.90, 8, 512, "no_kv_cache")]
    up = rescue(space=SPACE, tried=tried)
    assert up is not None and up.params["gpu_memory_utilization"] == 0.94  # (0.90, 0.99)
    tried.append(failed(0.94, 8, 512, "crash_under_load"))
    middle = rescue(space=SPACE, tried=tried)
    assert middle is not None and middle.params["gpu_memory_utilization"] == 0.92
    tried += [failed(0.92, 8, 512, "oom_cuda_graphs"), failed(0.91, 8, 512, "no_kv_cache")]
    assert rescue(space=SPACE, tried=tried) is None  # nothing left between 0.91 and 0.92


def test_rescue_skips_what_the_screen_knows_fails_and_stops_once_anything_served() -> None:
    defaults = failed(0.90, 256, 2048, "oom_cuda_graphs")

    def fails(p: Mapping[str, Any]) -> str | None:
        return "predicted" if p["gpu_memory_utilization"] >= 0.86 else None

    move = rescue(space=SPACE, tried=[defaults], fails=fails)
    assert move is not None and move.params["gpu_memory_utilization"] < 0.86
    assert rescue(space=SPACE, tried=[defaults, ok(0.80, 64, 2048, 10.0)]) is None
    assert rescue(space=SPACE, tried=[]) is None  # the defaults first


def small_cache(params: Mapping[str, Any]) -> int:
    """A toy memory model for ``starve``: little room at the floor of the utilization, and each
    batched token's activation memory costs the KV cache 40 tokens."""
    return int((float(params["gpu_memory_utilization"]) - 0.60) * 500_000) - 40 * int(
        params["max_num_batched_tokens"]
    )


def test_the_fewest_sequences_crashing_at_the_floor_get_a_cache_that_holds_half() -> None:
    """8 requests of 3,000 tokens crashed under load at 0.70 with the fewest sequences: the
    cache for 4 (12,000 tokens; the crash logged 2,000 more than the model predicts) is the
    largest chunk whose predicted cache holds 10,000 tokens, 1,000. Not once anything
    served, nor where the largest chunk still leaves a cache for more."""
    crashed = dataclasses.replace(
        failed(0.70, 8, 512, "crash_under_load"), kv_cache_tokens=31_520, peak_running=8
    )

    def propose(tried: list[Tried], model: Callable[..., int | None]) -> Any:
        return starve(space=SPACE, tried=tried, request_tokens=3000, most=48, capacity=model)

    move = propose([crashed], small_cache)
    assert move is not None and move.why.startswith("starve:")
    assert move.params == {
        "gpu_memory_utilization": 0.70,
        "max_num_seqs": 8,
        "max_num_batched_tokens": 1000,
    }
    again = dataclasses.replace(
        failed(0.70, 8, 1000, "crash_under_load"), kv_cache_tokens=12_000, peak_running=4
    )
    smaller = propose([crashed, again], small_cache)  # 2 of the 4: 4,000 predicted
    assert smaller is not None and smaller.params["max_num_batched_tokens"] == 1150
    assert propose([crashed, ok(0.75, 8, 512, 1.0)], small_cache) is None
    cheap = propose([crashed], lambda p: small_cache(p) + 39 * int(p["max_num_batched_tokens"]))
    assert cheap is None
    higher = dataclasses.replace(crashed, params=dict(crashed.params) | {"max_num_seqs": 16})
    assert propose([higher], small_cache) is None  # fewer sequences are the retreat's


def test_a_retreat_of_a_retreat_only_once_the_utilization_is_the_suspect() -> None:
    best = ok(0.88, 256, 2048, 100.0)
    first = failed(0.88, 8, 2048, "crash_under_load")
    again = dataclasses.replace(
        failed(0.87, 8, 2048, "crash_under_load"), source="retreat: from 0.88"
    )
    assert retreat(space=SPACE, tried=[best, first, again]) is None  # one batch setting
    others = [failed(0.88, 8, 4096, "crash_under_load"), failed(0.90, 256, 1024, "request_errors")]
    move = retreat(space=SPACE, tried=[best, *others, first, again])
    assert move is not None
    assert move.params["gpu_memory_utilization"] == 0.84  # three steps further down
    assert move.params["max_num_seqs"] == 8


def test_fill_goes_halfway_to_a_count_known_to_fail() -> None:
    best = Tried(
        params={"gpu_memory_utilization": 0.9, "max_num_seqs": 8, "max_num_batched_tokens": 512},
        outcome="ok",
        value=10.0,
        kv_cache_tokens=200_000,
    )
    wide = fill(space=SPACE, tried=[best], request_tokens=400, most=256)
    assert wide is not None and wide.params["max_num_seqs"] == 256
    graphs = failed(0.9, 200, 512, "oom_cuda_graphs")
    move = fill(space=SPACE, tried=[best, graphs], request_tokens=400, most=256)
    assert move is not None and move.params["max_num_seqs"] == 40  # sqrt(8 * 200)
    short_above = failed(0.95, 100, 512, "no_kv_cache")  # more memory, still too little
    move = fill(space=SPACE, tried=[best, short_above], request_tokens=400, most=256)
    assert move is not None and move.params["max_num_seqs"] == 28  # sqrt(8 * 100)
    short_below = failed(0.85, 100, 512, "no_kv_cache")  # less memory: says nothing here
    move = fill(space=SPACE, tried=[best, short_below], request_tokens=400, most=256)
    assert move is not None and move.params["max_num_seqs"] == 256


def test_no_climb_while_the_kv_cache_idles_unless_memory_bounds_the_batches() -> None:
    idle = dataclasses.replace(ok(0.90, 8, 512, 10.0), peak_kv_pct=12.0)
    assert next_climb(space=SPACE, tried=[idle]) is None
    bigger_short = failed(0.90, 64, 512, "no_kv_cache")
    move = next_climb(space=SPACE, tried=[idle, bigger_short])
    assert move is not None and move.params["gpu_memory_utilization"] > 0.90
    busy = dataclasses.replace(ok(0.90, 8, 512, 10.0), peak_kv_pct=80.0)
    assert next_climb(space=SPACE, tried=[busy]) is not None


def _candidate(value: float, reserved_gib: float) -> Candidate:
    return Candidate((), True, value, None, value, reserved_gib)  # type: ignore[arg-type]


def test_finalists_far_behind_the_best_value_are_not_remeasured() -> None:
    goal = Goal()
    top, near, far = _candidate(100.0, 9.0), _candidate(90.0, 8.0), _candidate(70.0, 7.0)
    ranked = [top, near, far]
    assert finalists(ranked, goal=goal, count=3) == ranked
    assert finalists(ranked, goal=goal, count=3, noise=0.05) == [top, near]  # 4 x 5% = 20%


@dataclass(frozen=True, kw_only=True)
class Failing(Recording):
    """No candidate starts: every launch runs short of KV-cache memory."""

    serve: Callable[[int], bool] = lambda launch: False
    launched: list[dict[str, Any]] = field(default_factory=list)

    def run(
        self, *, args: Mapping[str, ArgValue], log_path: Path, on_phase: Callable[[str], None]
    ) -> TrialResult:
        self.launched.append(dict(args))
        if self.serve(len(self.launched)):
            return TrialResult(
                outcome=Outcome.OK, reason="", args=dict(args), log_path=log_path,
                metrics=metrics(100.0 + len(self.launched)),
            )  # fmt: skip
        return TrialResult(
            outcome=Outcome.NO_KV_CACHE, reason="no KV cache", args=dict(args), log_path=log_path
        )


def _plan(tmp_path: Path, runner: Recording, budget: int) -> st.StudyPlan:
    study = st.open_study(name="reserve", storage=optuna.storages.InMemoryStorage(), seed=3)
    return st.StudyPlan(
        study=study, space=STUDY_SPACE, runner=runner, budget=budget, log_dir=tmp_path / "logs",
        default_params=DEFAULTS, prescreen=Screen(),
    )  # fmt: skip


def test_the_reserve_is_searched_while_nothing_has_served(tmp_path: Path) -> None:
    finish, trials = Finish(), 10
    runner = Failing()
    plan = _plan(tmp_path, runner, trials - reserve(finish, trials=trials))
    search(plan, finish, reporter=Quiet(), budget=trials)
    assert len(runner.launched) == trials  # all 10, not 10 - 4


def test_the_reserve_is_kept_for_the_finalists_that_exist(tmp_path: Path) -> None:
    finish, trials = Finish(), 10
    runner = Failing(serve=lambda launch: launch == 3)  # one candidate serves: 1 re-measure
    plan = _plan(tmp_path, runner, trials - reserve(finish, trials=trials))
    search(plan, finish, reporter=Quiet(), budget=trials)
    assert len(runner.launched) == trials - 1


def test_a_finalist_found_in_the_searched_reserve_keeps_its_second_run(tmp_path: Path) -> None:
    """Nothing serves in the first 6 launches, so the search goes on into the reserve; the 8th
    serves, the best value: the 9th launch is held for its second run (judged after every
    launch, not once)."""
    finish, trials = Finish(), 10
    runner = Failing(serve=lambda launch: launch == 8)
    plan = _plan(tmp_path, runner, trials - reserve(finish, trials=trials))
    search(plan, finish, reporter=Quiet(), budget=trials)
    assert len(runner.launched) == trials - 1


@pytest.mark.parametrize(("runner_up", "third_runs"), [(140.0, 2), (125.0, 1)])
def test_launches_left_race_the_finalists_close_to_the_leader(
    tmp_path: Path, runner_up: float, third_runs: int
) -> None:
    """Every finalist gets a second run; launches left give third runs only to finalists
    within twice the noise of the leader (140 of 150: yes; 125: no, it stays at two). Repeats
    differ by 4% (not a quiet machine, within the noise)."""
    finish = Finish(repeats=3, finalists=2, noise=0.05)
    values = {5: 150.0, 4: runner_up}
    runner = Scripted(value=lambda first, run: values.get(first, 100.0) * (1 + 0.02 * (-1) ** run))
    plan = _plan(tmp_path, runner, 5)
    st.run_study(plan, reporter=Quiet())
    remeasure(plan, finish, reporter=Quiet(), budget=12)
    runs = [runner.launched.count(runner.launched[i]) for i in (4, 3)]
    assert runs == [3, 2 + third_runs - 1]
    assert len(runner.launched) == 5 + 2 + third_runs  # the rest of the budget is left unused
