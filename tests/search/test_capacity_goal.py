"""``--objective capacity`` as a goal: needs an SLO, its value is the capacity, and a
configuration where no rate met the SLOs is infeasible (told to Optuna, not a crash)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autotune.engine.outcome import Outcome
from autotune.errors import UserError
from autotune.load.metrics import Metrics, RequestRecord, aggregate
from autotune.search.goal import SLO, Goal, goal_from
from autotune.search.tell import tell
from autotune.trial.capacity import Capacity, RatePoint
from autotune.trial.record import TrialRecord
from autotune.trial.runner import TrialResult


def metrics(ttft_s: float) -> Metrics:
    rec = RequestRecord(
        ok=True, prompt_tokens=8, output_tokens=4, start=0.0, ttft_s=ttft_s, itls_s=(0.01,) * 3,
        e2e_s=ttft_s + 0.03, error=None, status=200,
    )  # fmt: skip
    return aggregate([rec] * 20, duration_s=2.0)


FAST, SLOW = metrics(0.1), metrics(0.9)  # TTFT 100 ms and 900 ms
GOAL = Goal(kind="capacity", slos=(("ttft_p95_ms", 500.0),))


def test_capacity_needs_an_slo_and_maximizes_requests_per_second() -> None:
    with pytest.raises(UserError, match="--objective capacity needs at least one --slo"):
        goal_from(objective="capacity", slos=(), min_throughput=None, memory_budget=None,
                  total_gib=24)  # fmt: skip
    assert GOAL.directions == ("maximize",) and not GOAL.multi
    assert GOAL.values(throughput=900.0, goodput=None, reserved_gib=9.0, capacity=4.5) == [4.5]
    assert GOAL.values(throughput=900.0, goodput=None, reserved_gib=9.0, capacity=None) == [0.0]
    # the other objectives ignore it
    assert Goal().values(throughput=900.0, goodput=None, reserved_gib=9.0, capacity=4.5) == [900.0]
    at = FAST.to_dict()
    assert GOAL.constraints(at, ok=True, capacity=4.5)[SLO] < 0
    assert GOAL.constraints(at, ok=True, capacity=None)[SLO] >= 1.0  # no rate met them


def result(capacity: Capacity) -> TrialResult:
    shown = capacity.at_capacity or capacity.points[0]
    return TrialResult(
        outcome=Outcome.OK, reason="", args={"max_num_seqs": 8}, log_path=Path("t.log"),
        metrics=shown.metrics, capacity=capacity,
    )  # fmt: skip


def test_tell_passes_the_capacity_and_an_unmet_search_is_infeasible() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    met = Capacity(rate=3.0, points=(
        RatePoint(rate=3.0, metrics=FAST, met=True),
        RatePoint(rate=6.0, metrics=SLOW, met=False, saturated=True),
    ))  # fmt: skip
    tell(study, study.ask(), result(met), goal=GOAL)
    none = Capacity(rate=None, points=(RatePoint(rate=1.0, metrics=SLOW, met=False),))
    tell(study, study.ask(), result(none), goal=GOAL)
    # a step cut for failures: its percentiles within the SLO, yet no rate met it
    cut = Capacity(rate=None, points=(RatePoint(rate=1.0, metrics=FAST, met=False),))
    tell(study, study.ask(), result(cut), goal=GOAL)
    first, second, third = study.trials
    assert first.values == [3.0] and first.constraints[SLO] < 0
    assert TrialRecord.of(first).capacity == met and not TrialRecord.of(first).missed
    for t in (second, third):
        assert t.state == optuna.trial.TrialState.COMPLETE and t.values == [0.0]
        assert t.constraints[SLO] > 0 and TrialRecord.of(t).missed
    assert "no request rate met the SLOs" in TrialRecord.of(third).missed
    assert study.best_trial.number == first.number
