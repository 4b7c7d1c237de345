"""After the study: re-measure the best candidates and soak them (what the profile then saves:
``search.saved``).

Re-measurements are trials of the study (enqueued with the parameters and arguments the finalist
ran with), so they count against the launch budget and survive a resume. Soak verdicts cannot
change a finished trial: they are kept in the study's ``soak`` attribute, keyed by the
configuration's arguments.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from autotune.load.workload import Workload
from autotune.search import best
from autotune.search import ranking as choice
from autotune.search import study as st
from autotune.search import study_keys as keys
from autotune.search.goal import Goal, Statistic
from autotune.search.pareto import pareto_front
from autotune.search.ranking import QUIET, QUIET_PAIRS, Candidate, quiet
from autotune.trial.record import TrialRecord, attrs, remeasure_source
from autotune.trial.soak import SoakVerdict, run_soak

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finish:
    """How a tune run ends: re-measurement, statistic and soak."""

    repeats: int = 3  # most measurements of a finalist (1: no re-measurement)
    finalists: int = 4
    statistic: Statistic = "median"  # of the repeats
    soak: bool = True
    noise: float = 0.05
    most_images: bool = False

    @property
    def settled(self) -> int:
        """Measurements that settle a finalist whose runs agree: two (one re-measure)."""
        return min(self.repeats, 2)

    def runs_due(self, cand: Candidate, *, top: float, sign: float) -> int:
        """Runs the race gives ``cand`` when launches are left: up to ``repeats`` within
        ``CLOSE`` times the noise of the leader's value ``top`` (signed), where one more run
        can change the choice, or while its runs differ by more than the noise (one may be an
        outlier: the median of three is robust to it); else two.
        ``sign``: 1 to maximize, -1 to minimize, 0 for a Pareto front (every finalist is
        close)."""
        close = top - sign * cand.value <= CLOSE * self.noise * abs(top)
        runs = cand.measured
        differ = max(runs) - min(runs) > self.noise * max(runs)
        return self.repeats if close or differ else self.settled

    def next_run(self, finalists: list[Candidate], *, sign: float) -> Candidate | None:
        """The finalist to launch next, the fewest runs first: each finalist gets a second run
        (``settled``); then, from launches left over (fewer finalists than the reserve),
        ``runs_due``."""
        short = [c for c in finalists if len(c.trials) < self.settled]
        if not short and finalists:
            top = max(sign * c.value for c in finalists)
            short = [c for c in finalists if len(c.trials) < self.runs_due(c, top=top, sign=sign)]
        return min(short, key=lambda c: len(c.trials), default=None)


FAR = 4  # a candidate this many times ``--noise`` behind the best value is not re-measured
CLOSE = 2  # ... this many times it behind the leader still races for further runs


def reserve(finish: Finish, *, trials: int) -> int:
    """Launches kept from the study for re-measurement (0 when the budget is too small): one
    per finalist. A third run for a finalist whose two runs disagree takes what is left."""
    if finish.repeats < 2:
        return 0
    need = finish.finalists * (finish.settled - 1)
    return need if trials - need >= max(finish.finalists, 2) else 0


def search(plan: st.StudyPlan, finish: Finish, *, reporter: st.Reporter, budget: int) -> None:
    """The study within ``plan.budget``, then the launches the re-measures will not need: the
    reserve is held for finalists that exist (none while nothing has served), so a study that
    finds nothing feasible searches with its whole ``budget`` (``--trials``). Past
    ``plan.budget`` it searches one launch at a time, and a configuration that serves best by
    value keeps the launch its second run needs. Stops where the study stopped for any other
    reason (timeout, patience, an exhausted space)."""
    st.run_study(plan, reporter=reporter)
    held = 0  # launches the search may take before the finalists' needs are judged again
    while (done := st.launches(plan.study)) >= plan.budget:
        if done >= held:
            held = budget - _wanted(plan, finish, left=budget - done)
        stop = min(held, budget - _wanted(plan, finish, left=budget - done, leader=True))
        if stop <= done:
            return
        plan = replace(plan, budget=done + 1)
        st.run_study(plan, reporter=reporter)


def _wanted(plan: st.StudyPlan, finish: Finish, *, left: int, leader: bool = False) -> int:
    """Launches the finalists' second runs would take now, at most ``left``; with ``leader``,
    only the best value's."""
    if finish.repeats < 2 or left <= 0:
        return 0
    ranked = _ranked(plan, finish)
    if quiet(ranked, noise=finish.noise):
        return 0
    sign = 1.0 if plan.goal.multi or plan.goal.directions[0] == "maximize" else -1.0
    chosen = _chosen(ranked, plan, finish)
    if leader:
        chosen = [max(ranked, key=lambda c: sign * c.value)] if ranked else []
    need = sum(max(finish.settled - len(c.trials), 0) for c in chosen)
    return min(need, left)


def remeasure(plan: st.StudyPlan, finish: Finish, *, reporter: st.Reporter, budget: int) -> int:
    """Launch the best candidates again, one launch at a time, within the launch ``budget``
    (``--trials``, the study's launches included). Each launch goes to the finalist with the
    fewest measurements that still needs one (``Finish.next_run``), the finalists chosen
    again after every launch: a candidate whose first run was lucky drops out once its second
    shows it, and the next one gets the launch. A re-measure runs exactly the arguments its
    finalist ran with: never lifted by the guide, never skipped by the pre-screen
    (``search.study.run_study``). On a quiet machine (``quiet``) the launches left search on
    instead."""
    study = plan.study
    if finish.repeats < 2:
        return 0
    done = 0
    sign = 0.0 if plan.goal.multi else 1.0 if plan.goal.directions[0] == "maximize" else -1.0
    while budget - st.launches(study) > 0:
        ranked = _ranked(plan, finish)
        if quiet(ranked, noise=finish.noise):
            log.info(
                f"repeats agree within {QUIET * finish.noise:.0%}: a quiet machine; "
                "the launches left search on"
            )
            st.run_study(replace(plan, budget=budget), reporter=reporter)
            break
        cand = finish.next_run(_chosen(ranked, plan, finish), sign=sign)
        if cand is None:
            break
        if not done:
            log.info(f"re-measuring the {finish.finalists} best, one launch at a time")
        ran = TrialRecord.of(cand.chosen)
        # What ran (after the guide's lift), not Optuna's params (the sampler's own proposal).
        params = dict(ran.params if ran.params is not None else cand.chosen.params)
        marks = attrs(source=remeasure_source(cand.trials[0].number), vllm_args=ran.vllm_args)
        study.enqueue_trial(params, user_attrs=marks)
        before = st.launches(study)
        again = replace(plan, budget=before + 1, timeout_s=None, patience=0, prune=False)
        st.run_study(again, reporter=reporter)
        if st.launches(study) <= before:  # nothing launched (the study stopped): do not spin
            break
        done += 1
    return done


def _ranked(plan: st.StudyPlan, finish: Finish) -> list[Candidate]:
    return best.ranked(
        plan.study,
        goal=plan.goal,
        noise=finish.noise,
        statistic=finish.statistic,
        repeats=finish.settled,
        most_images=finish.most_images,
    )


def _chosen(ranked: list[Candidate], plan: st.StudyPlan, finish: Finish) -> list[Candidate]:
    return finalists(ranked, goal=plan.goal, count=finish.finalists, noise=finish.noise)


def finalists(
    ranked: list[Candidate], *, goal: Goal, count: int, noise: float | None = None
) -> list[Candidate]:
    """The candidates to re-measure: the first in the ranking and the best by value, in turn
    (the ranking puts a longer context or more headroom first among results it cannot tell
    apart; one measurement cannot tell, so the best value is re-measured beside it). With
    ``noise``, none more than ``FAR`` times it behind the best value."""
    if goal.multi:
        return ranked[:count]
    sign = 1.0 if goal.directions[0] == "maximize" else -1.0
    by_value = sorted(ranked, key=lambda c: -sign * c.value)
    if noise is not None and by_value:  # far behind the best value: one run is enough
        top, span = by_value[0].value, FAR * noise
        near = [c for c in ranked if sign * (c.value - top) >= -span * abs(top)]
        ranked, by_value = near, [c for c in by_value if c in near]
    picked: list[Candidate] = []
    for pair in zip(ranked, by_value, strict=True):
        for cand in pair:
            if cand not in picked and len(picked) < count:
                picked.append(cand)
    return picked


def choose(
    plan: st.StudyPlan,
    finish: Finish,
    *,
    workload: Workload,
    vocab_size: int | None,
    reporter: st.Reporter,
    image_tokens: int | None = None,
) -> list[Candidate]:
    """The configurations to save, soaked: the winner (single objective) or the whole Pareto
    front. Empty when nothing feasible survives."""
    study, goal = plan.study, plan.goal
    failed: set[str] = set()
    for _ in range(64):  # each round drops at least one candidate that failed its soak
        cands = [
            c
            for c in best.ranked(
                study,
                goal=goal,
                noise=finish.noise,
                statistic=finish.statistic,
                repeats=finish.settled,
                most_images=finish.most_images,
            )
            if choice.args_key(c.args) not in failed
        ]
        picked = pareto_front(cands) if goal.multi else cands[:1]
        if picked and not failed and (why := noisy(cands, noise=finish.noise)):
            log.warning(why)
        if not picked or not finish.soak:
            return picked
        bad = [
            c
            for c in picked
            if not _soaked(plan, c, (workload, vocab_size, image_tokens), reporter)
        ]
        if not bad:
            return picked
        failed.update(choice.args_key(c.args) for c in bad)
    return []


def noisy(cands: Sequence[Candidate], *, noise: float) -> str | None:
    """Why the choice is uncertain on this machine, or None: the configurations launched more
    than once (at least ``QUIET_PAIRS``) differed between their runs by more than ``noise``
    (``--noise``), as a median. Results closer than that cannot be told apart by a few launches
    each, so the saved one may be that much slower than the best of those launched."""
    twice = [c for c in cands if c.feasible and len(c.trials) >= 2]
    if len(twice) < QUIET_PAIRS:
        return None
    spread = statistics.median(c.disagreement for c in twice)
    if spread <= noise:
        return None
    return (
        f"a noisy machine: runs of one configuration differed by {spread:.0%} (median over the "
        f"{len(twice)} launched more than once; --noise {noise:.0%}). Configurations closer than "
        "that cannot be told apart by these launches: the one saved may be up to that much "
        "slower than the best. Stop other work on the GPU, or give the study more --trials "
        "(more re-measures)"
    )


def _soaked(
    plan: st.StudyPlan,
    cand: Candidate,
    load: tuple[Workload, int | None, int | None],
    reporter: st.Reporter,
) -> bool:
    workload, vocab_size, image_tokens = load
    study = plan.study
    key = choice.args_key(cand.args)
    record = dict(study.user_attrs.get(keys.SOAK) or {})
    if key not in record:
        number = cand.trials[0].number
        log.info(f"soak: trial {number}'s configuration under its heaviest load")
        result = run_soak(
            runner=plan.runner,
            workload=workload,
            args=cand.args,
            vocab_size=vocab_size,
            image_tokens=image_tokens,
            log_path=plan.log_dir / f"soak-{number:04d}.log",
            on_phase=reporter.phase,
            trial=number,
        )
        record[key] = result.to_dict()
        study.set_user_attr(keys.SOAK, record)
    verdict = SoakVerdict.from_dict(record[key])
    if not verdict.passed:
        log.info(
            f"soak failed for trial {verdict.trial} ({verdict.outcome}: "
            f"{verdict.reason}); not saved, trying the next candidate"
        )
    return verdict.passed
