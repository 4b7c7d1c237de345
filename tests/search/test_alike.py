"""Launches that ran alike pool their runs: the same batch settings at two memory settings, with
a KV cache that never bound either and the same peak of requests running, differ only by the
machine's noise (``alike.ran_alike``). The guide sees one value for them, a slower run of the
one with more memory is no contradiction to measure again (``moves.recheck``), and the choice
judges them as one candidate (``search.ranking``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autotune.engine.launcher import ArgValue
from autotune.engine.outcome import Outcome
from autotune.search import study as st
from autotune.search.goal import Goal
from autotune.search.moves import recheck
from autotune.search.moves.alike import memory_unused, ran_alike, tried_alike
from autotune.search.moves.edge import Tried
from autotune.search.moves.guide import Guide
from autotune.search.moves.seen import tried
from autotune.search.ranking import candidates
from autotune.trial.record import TrialRecord
from autotune.trial.runner import TrialResult
from tests.search.test_goals import Run
from tests.search.test_remeasure import DEFAULTS, SPACE, Quiet, Recording, metrics

MEMORY = "gpu_memory_utilization"


def _key(params: Mapping[str, float | int], *, running: int = 40, kv: float = 60.0) -> str | None:
    return ran_alike(params, memory=MEMORY, running=running, kv_pct=kv, full=False)


def test_the_same_batches_with_an_unbound_cache_and_the_same_running_peak_ran_alike() -> None:
    low = {MEMORY: 0.85, "max_num_seqs": 64, "max_num_batched_tokens": 2048}
    high = low | {MEMORY: 0.92}
    assert _key(low) is not None and _key(low) == _key(high)
    assert _key(low) != _key(high, running=52)  # the scheduler ran more at once
    assert _key(low) != _key(high | {"max_num_seqs": 128})  # other batch settings
    full = ran_alike(high, memory=MEMORY, running=40, kv_pct=99.0, full=True)
    unread = ran_alike(high, memory=MEMORY, running=None, kv_pct=60.0, full=False)
    assert full is None and unread is None
    # What the guide reads: preemptions make a launch's cache "full"
    served = Tried(high, Outcome.OK.value, 1.0, peak_kv_pct=60.0, peak_running=40, preemptions=0)
    assert tried_alike(served, memory=MEMORY) == _key(high)
    preempted = Tried(high, Outcome.OK.value, 1.0, peak_kv_pct=60.0, peak_running=40, preemptions=3)
    assert tried_alike(preempted, memory=MEMORY) is None


@dataclass(frozen=True, kw_only=True)
class Counted(Recording):
    """Serves every launch: 100 tok/s at vLLM's default utilization, ``slower`` above it, with
    vLLM's counters reporting ``kv_pct`` at its peak, 40 requests running and no preemptions
    (``preempted`` at the default)."""

    slower: float = 80.0
    kv_pct: float = 60.0
    preempted: int = 0
    preempted_above: int = 0  # preemptions above the default

    def run(
        self, *, args: Mapping[str, ArgValue], log_path: Path, on_phase: Callable[[str], None]
    ) -> TrialResult:
        self.launched.append(dict(args))
        default = float(args[MEMORY]) == DEFAULTS[MEMORY]
        return TrialResult(
            outcome=Outcome.OK, reason="", args=dict(args), log_path=log_path,
            metrics=metrics(100.0 if default else self.slower),
            preemptions=self.preempted if default else self.preempted_above,
            peak_kv_cache_usage_pct=self.kv_pct,
            peak_requests_running=40, peak_requests_waiting=0,
        )  # fmt: skip


def _study(tmp_path: Path, runner: Counted, *, budget: int = 3) -> optuna.Study:
    """vLLM's defaults (0.9), then 0.95 with the same batches, then moves of the guide."""
    study = st.open_study(name="alike", storage=optuna.storages.InMemoryStorage(), seed=5)
    plan = st.StudyPlan(
        study=study, space=SPACE, runner=runner, budget=budget, log_dir=tmp_path / "logs",
        default_params=DEFAULTS, enqueue=(DEFAULTS | {MEMORY: 0.95},),
        guide=Guide(space=SPACE, seed=0),
    )  # fmt: skip
    st.run_study(plan, reporter=Quiet())
    return study


def test_runs_that_ran_alike_pool_and_are_not_measured_again(tmp_path: Path) -> None:
    """0.95 measures 80 against 0.9's 100, both with a cache 60% full and 40 requests running:
    the guide sees their median for both, and nothing is measured again. Where both preempted
    as often (the cache bound them), they did not run alike: 0.95 runs again."""
    two = _study(tmp_path / "two", Counted(), budget=2)
    assert [t.value for t in tried(two, memory=MEMORY)] == [90.0, 90.0]
    assert [t.value for t in tried(two)] == [100.0, 80.0]
    study = _study(tmp_path / "alike", Counted())
    sources = [TrialRecord.of(t).source for t in study.get_trials()]
    assert not any(s.startswith("re-measure") for s in sources)
    assert recheck.contradiction(study, space=SPACE) is None

    bound = _study(tmp_path / "bound", Counted(preempted=7, preempted_above=7))
    assert TrialRecord.of(bound.get_trials()[2]).source == "re-measure of trial 1"
    assert [t.value for t in tried(bound, memory=MEMORY)[:2]] == [100.0, 80.0]


@dataclass
class Counters(Run):
    """A served trial with vLLM's counters: ``kv_pct`` at its peak, 40 requests running."""

    kv_pct: float = 60.0
    preempted: int = 0

    @property
    def user_attrs(self) -> dict[str, Any]:
        return super().user_attrs | {
            "params": self.args, "peak_kv_cache_usage_pct": self.kv_pct,
            "peak_requests_running": 40, "peak_requests_waiting": 0,
            "preemptions": self.preempted,
        }  # fmt: skip


def test_configurations_that_ran_alike_are_one_candidate_at_the_smaller_reservation() -> None:
    """0.90 ran 100 and 96, 0.95 ran 80, alike: one candidate judged on all three runs (median
    96), with 0.90's arguments and reservation, beside 0.85 / 128 sequences. Where 0.90's
    cache bound it (preemptions), they stay apart."""
    low = {MEMORY: 0.90, "max_num_seqs": 64}
    high, other = low | {MEMORY: 0.95}, {MEMORY: 0.85, "max_num_seqs": 128}
    runs = [
        Counters(0, low, 100.0, reserved=21.6), Counters(1, high, 80.0, reserved=22.8),
        Counters(2, other, 97.0, reserved=20.4), Counters(3, low, 96.0, reserved=21.6),
    ]  # fmt: skip
    goal = Goal()
    cands = candidates(runs, goal=goal, statistic="median")
    assert len(cands) == 2
    pooled = next(c for c in cands if c.args == low)
    assert [t.number for t in pooled.trials] == [0, 3, 1] and pooled.value == 96.0
    assert pooled.reserved_gib == 21.6
    apart = [dataclasses.replace(r, preempted=5) if r.args == low else r for r in runs]
    cands = candidates(apart, goal=goal, statistic="median")
    assert sorted(len(c.trials) for c in cands) == [1, 1, 2]


def test_batches_that_ran_alike_at_two_memory_settings_climb_no_further() -> None:
    """0.90 and 0.93 ran alike (the extra KV cache went unused): more memory is no use to these
    batch settings. A cache that bound at 0.90 says nothing of the kind."""

    def served(util: float, *, preempted: int = 0) -> Tried:
        params = {MEMORY: util, "max_num_seqs": 96, "max_num_batched_tokens": 2048}
        return Tried(params, "ok", 100.0, peak_kv_pct=70.0, peak_running=96, preemptions=preempted)

    assert memory_unused([served(0.9), served(0.93)], memory=MEMORY, of=served(0.93))
    assert not memory_unused([served(0.93)], memory=MEMORY, of=served(0.93))
    bound = [served(0.9, preempted=4), served(0.93)]
    assert not memory_unused(bound, memory=MEMORY, of=served(0.9, preempted=4))
