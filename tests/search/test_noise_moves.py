"""Moves and choices for a noisy machine: a configuration that served slower with more memory
(or, where the KV cache bound the one with less, no faster) runs again before the guide
believes it (``moves.recheck``), the median of two runs is their mean, and the rescue's
smallest batched tokens are tried doubled once (``rescue.restore``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from autotune.engine.launcher import ArgValue
from autotune.engine.outcome import Outcome
from autotune.search import best
from autotune.search import study as st
from autotune.search.finalize import Finish, remeasure
from autotune.search.goal import Goal
from autotune.search.moves import recheck
from autotune.search.moves.guide import Guide
from autotune.search.moves.rescue import restore
from autotune.search.moves.seen import tried
from autotune.trial.record import TrialRecord
from autotune.trial.runner import TrialResult
from tests.search.test_edge import SPACE, failed, ok
from tests.search.test_remeasure import DEFAULTS, Quiet, Recording, metrics
from tests.search.test_remeasure import SPACE as STUDY_SPACE


def _key(args: Mapping[str, Any]) -> str:
    return json.dumps(dict(args), sort_keys=True)


@dataclass(frozen=True, kw_only=True)
class Scripted(Recording):
    """Serves every launch; ``value(first, run)``: the output tokens/s of the ``run``-th run
    (from 1) of the configuration that launch ``first`` (from 1) ran first."""

    value: Callable[[int, int], float] = lambda first, run: 100.0
    preemptions: int | None = None  # what vLLM's counters report for every benchmark
    launched: list[dict[str, Any]] = field(default_factory=list)

    def run(
        self, *, args: Mapping[str, ArgValue], log_path: Path, on_phase: Callable[[str], None]
    ) -> TrialResult:
        self.launched.append(dict(args))
        same = [i for i, a in enumerate(self.launched, 1) if _key(a) == _key(args)]
        return TrialResult(
            outcome=Outcome.OK, reason="", args=dict(args), log_path=log_path,
            metrics=metrics(self.value(same[0], len(same))), preemptions=self.preemptions,
        )  # fmt: skip


def _guided(tmp_path: Path, runner: Scripted, *, budget: int) -> optuna.Study:
    """A guided study of ``budget`` launches: vLLM's defaults (0.9), then 0.95 with the same
    batch settings."""
    more = DEFAULTS | {"gpu_memory_utilization": 0.95}
    study = st.open_study(name="recheck", storage=optuna.storages.InMemoryStorage(), seed=5)
    plan = st.StudyPlan(
        study=study, space=STUDY_SPACE, runner=runner, budget=budget, log_dir=tmp_path / "logs",
        default_params=DEFAULTS, enqueue=(more,), guide=Guide(space=STUDY_SPACE, seed=0),
    )  # fmt: skip
    st.run_study(plan, reporter=Quiet())
    return study


def test_more_memory_measured_slower_runs_again_before_the_guide_believes_it(
    tmp_path: Path,
) -> None:
    """0.9 serves 100 tok/s; 0.95 with the same batches measures 80 once (a slow run), then
    110: it is re-measured at once, and the guide sees their median."""
    runner = Scripted(
        value=lambda first, run: 100.0 if first == 1 else (80.0 if run == 1 else 110.0)
    )
    study = _guided(tmp_path, runner, budget=3)
    trials = study.get_trials()
    assert TrialRecord.of(trials[2]).source == "re-measure of trial 1"
    assert runner.launched[2] == runner.launched[1]
    seen = [t for t in tried(study) if t.params.get("gpu_memory_utilization") == 0.95]
    assert [t.value for t in seen] == [95.0]


def test_when_more_memory_stays_slower_the_faster_run_with_less_is_measured_again(
    tmp_path: Path,
) -> None:
    """0.95 measures 80 and 82: now 0.9's one run at 100 may be the lucky one; it runs again
    (and then nothing more: both sides ran twice)."""
    runner = Scripted(value=lambda first, run: 100.0 if first == 1 else 80.0 + 2 * (run - 1))
    study = _guided(tmp_path, runner, budget=4)
    sources = [TrialRecord.of(t).source for t in study.get_trials()]
    assert sources[2:4] == ["re-measure of trial 1", "re-measure of trial 0"]
    assert runner.launched[3] == runner.launched[0]
    assert recheck.contradiction(study, space=STUDY_SPACE) is None


def test_more_memory_not_faster_where_the_kv_cache_bound_runs_again(tmp_path: Path) -> None:
    """0.95 measures 98 against 0.9's 100: within the noise, unless vLLM's counters said 0.9
    preempted requests (its KV cache bound it, so more KV cache must help): then 0.95 runs
    again."""
    sources = {}
    for preempted in (None, 12):
        runner = Scripted(
            value=lambda first, run: 100.0 if first == 1 else (98.0 if run == 1 else 110.0),
            preemptions=preempted,
        )
        study = _guided(tmp_path / str(preempted), runner, budget=3)
        sources[preempted] = [TrialRecord.of(t).source for t in study.get_trials()]
    assert "re-measure of trial 1" not in sources[None]
    assert sources[12][2] == "re-measure of trial 1"


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


def test_restore_doubles_the_rescues_smallest_batched_tokens_once() -> None:
    """After a rescue served at 512 batched tokens and a fill sized the sequences, the best
    configuration is tried with 1024; not before the fill, not twice, not once moved."""
    rescued, filled = ok(0.9, 8, 512, 20.0), ok(0.9, 59, 512, 100.0)
    assert restore(space=SPACE, tried=[rescued]) is None  # the fewest sequences: fill first
    move = restore(space=SPACE, tried=[rescued, filled])
    assert move is not None and move.params == {
        "gpu_memory_utilization": 0.9, "max_num_seqs": 59, "max_num_batched_tokens": 1024,
    }  # fmt: skip
    assert restore(space=SPACE, tried=[rescued, filled, failed(0.9, 59, 1024, "oom")]) is None
    assert restore(space=SPACE, tried=[filled, ok(0.85, 59, 4096, 90.0)]) is None
    assert restore(space=SPACE, tried=[ok(0.9, 59, 2048, 100.0)]) is None  # not at the minimum
    lower = restore(space=SPACE, tried=[filled], expected=lambda p: 0.86)
    assert lower is not None and lower.params["gpu_memory_utilization"] == 0.86
