"""The end of a search under noise: a search that stopped improving hands its last launches to
the finalists' race (``finalize.settle``), a configuration that served slower with more memory
runs again before the guide believes it (``moves.recheck``), and the median of two runs is their
mean."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune.engine.launcher import ArgValue
from autotune.engine.outcome import Outcome
from autotune.search import best
from autotune.search import study as st
from autotune.search.finalize import Finish, remeasure, reserve, search, settle
from autotune.search.goal import Goal
from autotune.search.moves import guide as guides
from autotune.search.moves.guide import Guide
from autotune.trial.record import TrialRecord
from autotune.trial.runner import TrialResult
from tests.search.test_remeasure import DEFAULTS, Quiet, Recording, Screen, metrics
from tests.search.test_remeasure import SPACE as STUDY_SPACE


def _key(args: Mapping[str, Any]) -> str:
    return json.dumps(dict(args), sort_keys=True)


@dataclass(frozen=True, kw_only=True)
class Scripted(Recording):
    """Serves every launch; ``value(first, run)``: the output tokens/s of the ``run``-th run
    (from 1) of the configuration that launch ``first`` (from 1) ran first."""

    value: Callable[[int, int], float] = lambda first, run: 100.0
    launched: list[dict[str, Any]] = field(default_factory=list)

    def run(
        self, *, args: Mapping[str, ArgValue], log_path: Path, on_phase: Callable[[str], None]
    ) -> TrialResult:
        self.launched.append(dict(args))
        same = [i for i, a in enumerate(self.launched, 1) if _key(a) == _key(args)]
        return TrialResult(
            outcome=Outcome.OK, reason="", args=dict(args), log_path=log_path,
            metrics=metrics(self.value(same[0], len(same))),
        )  # fmt: skip


def _plan(tmp_path: Path, runner: Scripted, *, budget: int, finish: Finish) -> st.StudyPlan:
    study = st.open_study(name="settle", storage=optuna.storages.InMemoryStorage(), seed=5)
    return st.StudyPlan(
        study=study, space=STUDY_SPACE, runner=runner,
        budget=budget - reserve(finish, trials=budget), log_dir=tmp_path / "logs",
        default_params=DEFAULTS, prescreen=Screen(),
        settle=settle(finish, budget=budget, goal=Goal()),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("value", "searched"),
    [
        (lambda first, run: 200.0 if first == 1 else 195.0, 12),  # nothing beats launch 1
        (lambda first, run: 100.0 + 10 * first, 16),  # still finding
    ],
    ids=["stalled", "improving"],
)
def test_a_stalled_search_hands_its_last_launches_to_the_race(
    tmp_path: Path, value: Callable[[int, int], float], searched: int
) -> None:
    finish, budget = Finish(), 20
    runner = Scripted(value=value)
    plan = _plan(tmp_path, runner, budget=budget, finish=finish)
    search(plan, finish, reporter=Quiet(), budget=budget)
    assert len(runner.launched) == searched
    remeasure(plan, finish, reporter=Quiet(), budget=budget)
    sources = [TrialRecord.of(t).source for t in plan.study.get_trials()]
    remeasures = [s for s in sources if s.startswith("re-measure of trial")]
    assert len(remeasures) == len(runner.launched) - searched
    ranked = best.ranked(plan.study, goal=Goal(), noise=finish.noise, statistic="median")
    if searched == 12:  # the leader and the close finalists ran up to three times each
        assert ranked[0].measured == [200.0, 200.0, 200.0]
        assert sorted((len(c.trials) for c in ranked), reverse=True)[:5] == [3, 3, 3, 3, 1]
        assert len(runner.launched) == budget
    else:  # one second run per finalist (the reserve), no launch left for third runs
        assert len(runner.launched) == budget
        assert sorted(len(c.trials) for c in ranked)[-4:] == [2, 2, 2, 2]


def test_more_memory_measured_slower_runs_again_before_the_guide_believes_it(
    tmp_path: Path,
) -> None:
    """0.9 serves 100 tok/s; 0.95 with the same batches measures 80 once (a slow run), then
    110: it is re-measured at once, and the guide sees their median."""
    more = DEFAULTS | {"gpu_memory_utilization": 0.95}
    runner = Scripted(
        value=lambda first, run: 100.0 if first == 1 else (80.0 if run == 1 else 110.0)
    )
    study = st.open_study(name="recheck", storage=optuna.storages.InMemoryStorage(), seed=5)
    plan = st.StudyPlan(
        study=study, space=STUDY_SPACE, runner=runner, budget=3, log_dir=tmp_path / "logs",
        default_params=DEFAULTS, enqueue=(more,), guide=Guide(space=STUDY_SPACE, seed=0),
    )  # fmt: skip
    st.run_study(plan, reporter=Quiet())
    trials = study.get_trials()
    assert TrialRecord.of(trials[2]).source == "re-measure of trial 1"
    assert runner.launched[2] == runner.launched[1]
    seen = [t for t in guides.tried(study) if t.params.get("gpu_memory_utilization") == 0.95]
    assert [t.value for t in seen] == [95.0]


def test_the_median_of_two_runs_is_their_mean(tmp_path: Path) -> None:
    runner = Scripted(value=lambda first, run: 100.0 if run == 1 else 80.0)
    study = st.open_study(name="median", storage=optuna.storages.InMemoryStorage(), seed=5)
    plan = st.StudyPlan(
        study=study, space=STUDY_SPACE, runner=runner, budget=1, log_dir=tmp_path / "logs",
        default_params=DEFAULTS,
    )  # fmt: skip
    st.run_study(plan, reporter=Quiet())
    remeasure(plan, Finish(repeats=2, finalists=1), reporter=Quiet(), budget=2)
    (worst,) = best.ranked(study, goal=Goal(), noise=0.05, statistic="worst")
    (median,) = best.ranked(study, goal=Goal(), noise=0.05, statistic="median")
    assert (worst.value, median.value) == (80.0, 90.0)
    assert TrialRecord.of(median.chosen).throughput == 80.0  # an actual run, the lower middle
