"""Re-measuring the finalists in autotune's real study loop: a re-measure launches exactly the
arguments its finalist ran with (after the guide's lift, never the sampler's raw proposal), and
the pre-screen never skips it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from autotune.engine.defaults import Value
from autotune.engine.launcher import ArgValue
from autotune.engine.outcome import Outcome
from autotune.load.metrics import Metrics
from autotune.load.request import Request
from autotune.search import best
from autotune.search import study as st
from autotune.search.finalize import Finish, noisy, remeasure
from autotune.search.goal import Goal
from autotune.search.moves import guide as guides
from autotune.search.moves.guide import Guide
from autotune.search.ranking import candidates, quiet, rank
from autotune.search.screen_rules import ClassScreen
from autotune.search.space import Dim, SearchSpace
from autotune.testing.landscape import FakeTruth
from autotune.testing.landscape_runner import LandscapeRunner
from autotune.trial.record import TrialRecord
from autotune.trial.runner import TrialResult, TrialRunner
from tests.conftest import LLAMA_8B
from tests.search.test_goals import Run
from tests.testing.test_landscape import ENV, text_requests

SPACE = SearchSpace(
    dims=(
        Dim("gpu_memory_utilization", 0.70, 0.98, is_float=True),
        Dim("max_num_seqs", 8, 256, log=True),
        Dim("max_num_batched_tokens", 512, 16384, log=True),
        Dim("max_model_len", 2048, 2048),
    )
)
DEFAULTS: dict[str, Value] = {
    "gpu_memory_utilization": 0.9,
    "max_num_seqs": 256,
    "max_num_batched_tokens": 16384,
}
LIFTED = 0.96


class Quiet:
    def trial_started(self, **_: Any) -> None: ...
    def phase(self, text: str) -> None: ...
    def trial_finished(self, trial: Any) -> None: ...
    def trial_skipped(self, trial: Any) -> None: ...


class Lifting(Guide):
    """The guide's lift made certain: every proposal of the sampler runs at utilization 0.96
    (as after a configuration needing as much served there); no moves of its own."""

    def before_ask(self, study: Any) -> None:
        return None

    def lift(self, study: Any, params: Mapping[str, Value]) -> dict[str, Value]:
        return {**params, "gpu_memory_utilization": LIFTED}


class Screen:
    """A pre-screen that, once ``strict``, predicts every candidate fails (as the learned
    memory model did for the tester's finalists)."""

    strict = False
    prescreen = True

    def learn_all(self, trials: Iterable[tuple[int, TrialRecord]]) -> None: ...

    def learn_trial(self, *, trial: int, record: TrialRecord) -> None: ...

    def check(self, args: Mapping[str, Any]) -> str | None:
        return "predicted oom_cuda_graphs: like trial 0" if self.strict else None

    def predict_kv_tokens(self, args: Mapping[str, Any]) -> int | None:
        return None


def metrics(throughput: float) -> Metrics:
    values: dict[str, Any] = {f.name: 1.0 for f in dataclasses.fields(Metrics)}
    ints = ("completed", "failed", "input_tokens", "output_tokens", "max_concurrency")
    return Metrics(**(values | dict.fromkeys(ints, 1) | {"output_throughput": throughput}))


@dataclass(frozen=True, kw_only=True)
class Recording(TrialRunner):
    """Serves every candidate; throughput grows with the utilization, so the lifted trials are
    the finalists (within ``noise``, a machine whose repeats disagree). Records the arguments of
    every launch."""

    command: Sequence[str] = ()
    model: str = "model"
    requests: Sequence[Request] = ()
    launched: list[dict[str, Any]] = field(default_factory=list)
    interrupt: Callable[[Mapping[str, ArgValue]], bool] = lambda args: False
    noise: float = 0.03  # every other launch this much faster, the others this much slower

    def run(
        self, *, args: Mapping[str, ArgValue], log_path: Path, on_phase: Callable[[str], None]
    ) -> TrialResult:
        if self.interrupt(args):
            raise KeyboardInterrupt
        self.launched.append(dict(args))
        tput = 1000 * float(args["gpu_memory_utilization"]) + int(args["max_num_seqs"]) / 10
        tput *= 1.0 + self.noise * (-1) ** len(self.launched)  # launch to launch
        return TrialResult(
            outcome=Outcome.OK, reason="", args=dict(args), log_path=log_path, metrics=metrics(tput)
        )


def studied(tmp_path: Path, runner: TrialRunner, screen: Screen, budget: int = 5) -> st.StudyPlan:
    study = st.open_study(name="remeasure", storage=optuna.storages.InMemoryStorage(), seed=1)
    plan = st.StudyPlan(
        study=study,
        space=SPACE,
        runner=runner,
        budget=budget,
        log_dir=tmp_path / "logs",
        default_params=DEFAULTS,
        prescreen=screen,
        guide=Lifting(space=SPACE, seed=1),
    )
    st.run_study(plan, reporter=Quiet())
    return plan


def records(plan: st.StudyPlan) -> list[tuple[Any, TrialRecord]]:
    return [(t, TrialRecord.from_attrs(t.user_attrs)) for t in plan.study.get_trials()]


@pytest.mark.parametrize("strict", [False, True], ids=["no-screen", "screen-predicts-failure"])
def test_a_remeasure_runs_what_the_finalist_ran_and_is_never_prescreened(
    tmp_path: Path, strict: bool
) -> None:
    runner, screen = Recording(), Screen()
    plan = studied(tmp_path, runner, screen)
    ran = records(plan)
    assert len(runner.launched) == 5
    lifted = [(t, r) for t, r in ran if r.source == "" and r.ok]
    assert len(lifted) == 4  # the sampler's proposals, each run at the lifted utilization
    assert all(r.vllm_args["gpu_memory_utilization"] == LIFTED for _, r in lifted)
    assert any(t.params["gpu_memory_utilization"] != LIFTED for t, _ in lifted)  # raw kept

    screen.strict = strict  # the finalists' own arguments now predicted to fail
    wanted = remeasure(plan, Finish(repeats=2, finalists=3), reporter=Quiet(), budget=8)

    assert wanted == 3
    assert len(runner.launched) == 8  # every re-measure launched: none pre-screened
    again = [(t, r) for t, r in records(plan) if r.remeasure]
    assert len(again) == 3 and all(t.state is TrialState.COMPLETE for t, _ in again)
    by_number = {t.number: r for t, r in ran}
    for _, r in again:
        finalist = by_number[int(r.source.rsplit(" ", 1)[1])]
        assert r.outcome == Outcome.OK.value
        assert r.vllm_args == finalist.vllm_args  # exactly what ran, lift included
        assert r.vllm_args["gpu_memory_utilization"] == LIFTED
        assert r.params == finalist.params
        assert runner.launched.count(r.vllm_args) == 2
    ranked = best.ranked(plan.study, goal=plan.goal, noise=0.05, repeats=2)
    assert [len(c.trials) for c in ranked[:3]] == [2, 2, 2]  # each finalist measured twice
    assert all(c.args["gpu_memory_utilization"] == LIFTED for c in ranked[:3])


def test_an_interrupted_remeasure_stays_a_remeasure(tmp_path: Path) -> None:
    first = Recording()
    plan = studied(tmp_path, first, Screen())
    stop = dataclasses.replace(first, interrupt=lambda args: True)
    with pytest.raises(KeyboardInterrupt):
        remeasure(
            dataclasses.replace(plan, runner=stop),
            Finish(repeats=2, finalists=1),
            reporter=Quiet(),
            budget=6,
        )
    trials = plan.study.get_trials()
    interrupted = TrialRecord.from_attrs(trials[-2].user_attrs)
    waiting = trials[-1]
    assert interrupted.remeasure and interrupted.outcome == "interrupted"
    assert waiting.state is TrialState.WAITING
    queued = TrialRecord.from_attrs(waiting.user_attrs)
    assert queued.remeasure and queued.vllm_args == interrupted.vllm_args


@pytest.mark.parametrize("noise", [0.2, 0.0], ids=["noisy", "quiet"])
def test_remeasures_in_the_landscape_with_the_real_guide_and_screen(
    tmp_path: Path, noise: float
) -> None:
    """The fake's ground truth in-process, the real guide (climb, lift) and failure-class
    screen: each re-measure repeats its finalist's arguments, and none is skipped. On a quiet
    machine (repeats that agree, counting configurations that ran alike) the launches left
    after one or two re-measures search on."""
    env = ENV | {"AUTOTUNE_FAKE_NOISE": str(noise)}
    truth = FakeTruth(config=LLAMA_8B, env=env, requests=text_requests())
    space = SearchSpace(dims=(*SPACE.dims[:3], Dim("max_model_len", 2048, 2048)))
    study = st.open_study(name="landscape", storage=optuna.storages.InMemoryStorage(), seed=7)
    plan = st.StudyPlan(
        study=study,
        space=space,
        runner=LandscapeRunner(truth=truth),
        budget=12,
        log_dir=tmp_path / "logs",
        default_params={**DEFAULTS, "gpu_memory_utilization": 0.98},
        prescreen=ClassScreen(image_tokens=None),
        guide=guides.for_goal(kind="throughput", space=space, seed=7, knowledge=None),
    )
    st.run_study(plan, reporter=Quiet())
    before = {t.number: TrialRecord.from_attrs(t.user_attrs) for t in study.get_trials()}
    wanted = remeasure(plan, Finish(repeats=2, finalists=3), reporter=Quiet(), budget=15)
    again = [
        (t, r) for t in study.get_trials() if (r := TrialRecord.from_attrs(t.user_attrs)).remeasure
    ]
    assert wanted == len(again)
    assert wanted == 3 if noise else 1 <= wanted <= 2  # quiet: once two configurations agree
    assert st.launches(study) == 15
    for _, r in again:
        finalist = before[int(r.source.rsplit(" ", 1)[1])]
        assert r.launched and r.outcome != Outcome.SKIPPED.value
        assert r.vllm_args == finalist.vllm_args
    ranked = best.ranked(study, goal=plan.goal, noise=0.05, repeats=2)
    twice = [c for c in ranked if len(c.trials) == 2]
    assert len(twice) >= len(again)  # and configurations that ran alike (pooled runs)
    if noise:
        assert [len(c.trials) for c in ranked[:3]] == [2, 2, 2]
    else:  # the two that ran twice agree to the digit: one run says what a configuration does
        assert all(c.disagreement == 0.0 for c in twice)
        last = TrialRecord.from_attrs(study.get_trials()[-1].user_attrs)
        assert last.launched and not last.remeasure  # the third finalist's launch searched on


def test_a_quiet_machine_needs_two_agreeing_repeats_and_no_disagreeing_one() -> None:
    small, mid, large = {"max_num_seqs": 8}, {"max_num_seqs": 16}, {"max_num_seqs": 32}

    def quiet_for(runs: list[Run], noise: float = 0.05) -> bool:
        return quiet(candidates(runs, goal=Goal(), statistic="median"), noise=noise)

    agree = [Run(0, small, 100.0), Run(1, small, 100.4), Run(2, mid, 120.0), Run(3, mid, 119.8)]
    assert quiet_for(agree)  # 0.4% and 0.2% apart: within 0.2 x 5%
    assert not quiet_for(agree[:3])  # one configuration ran twice: too little to say
    assert not quiet_for([*agree, Run(4, large, 90.0), Run(5, large, 80.0)])  # one slow run
    assert not quiet_for(agree, noise=0.01)  # 0.4% apart is beyond 0.2 x 1%


def test_a_noisy_machine_says_the_choice_is_uncertain() -> None:
    """Repeats that differ by more than ``--noise`` (a median over the configurations launched
    more than once) are said at the end: the saved configuration may be that much slower."""
    small, mid, large = {"max_num_seqs": 8}, {"max_num_seqs": 16}, {"max_num_seqs": 32}

    def why(runs: list[Run], noise: float = 0.05) -> str | None:
        return noisy(candidates(runs, goal=Goal(), statistic="median"), noise=noise)

    loud = [Run(0, small, 100.0), Run(1, small, 80.0), Run(2, mid, 120.0), Run(3, mid, 102.0)]
    said = why([*loud, Run(4, large, 130.0)])  # 20% and 15% apart; one run of large says nothing
    assert said is not None and "differed by 18%" in said and "over the 2 launched" in said
    assert why(loud[:3]) is None  # one configuration ran twice: too little to say
    calm = [Run(0, small, 100.0), Run(1, small, 97.0), Run(2, mid, 120.0), Run(3, mid, 117.0)]
    assert why(calm) is None  # 3% and 2.5% apart: within 5%
    assert why(calm, noise=0.02) is not None


def test_a_quiet_machine_tells_results_apart_by_its_own_noise() -> None:
    small, mid = {"max_num_seqs": 8}, {"max_num_seqs": 16}
    lean, big = {"max_num_seqs": 64}, {"max_num_seqs": 128}
    pairs = [Run(0, small, 100.0), Run(1, small, 100.2), Run(2, mid, 99.0), Run(3, mid, 99.1)]
    singles = [Run(4, lean, 120.0, reserved=8.0), Run(5, big, 124.0, reserved=12.0)]

    def first(runs: list[Run]) -> dict[str, int]:
        goal = Goal()
        found = rank(candidates(runs, goal=goal, statistic="median"), goal=goal, noise=0.05,
                     repeats=2, most_images=False)  # fmt: skip
        return found[0].args

    assert first(singles) == lean  # 3% apart is inside 5%: the smaller reservation wins
    assert first(pairs + singles) == big  # repeats agree within 0.2%: 3% apart is a difference
