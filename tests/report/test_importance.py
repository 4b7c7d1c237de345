"""The importance chart: only with enough feasible trials, only for parameters that varied, with
the trial count on it; otherwise a caveat line instead of the chart."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autotune.report.data import MIN_FEASIBLE, importances
from autotune.report.html import write_report
from autotune.search import study as st

pytest.importorskip("plotly")
pytest.importorskip("matplotlib")

DIMS = {
    "gpu_memory_utilization": optuna.distributions.FloatDistribution(0.5, 0.98),
    "max_num_seqs": optuna.distributions.IntDistribution(8, 512, log=True),
}


def study_of(
    tmp_path: Path, seqs: list[int], *, util: float | None = 0.9, failed: int = 0
) -> optuna.Study:
    """Feasible trials at ``seqs`` (throughput grows with them), ``util`` fixed (None: varied),
    then ``failed`` infeasible ones."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'imp.db'}", study_name="m@hw@wl@throughput@1",
        direction="maximize",
    )  # fmt: skip
    runs = [(s, 0.5 + 0.04 * i if util is None else util, True) for i, s in enumerate(seqs)]
    runs += [(8, 0.6 if util is None else util, False)] * failed
    for seq, u, ok in runs:
        study.enqueue_trial({"gpu_memory_utilization": u, "max_num_seqs": seq})
        trial = study.ask(DIMS)
        trial.set_user_attr("outcome", "ok" if ok else "oom_profiling")
        trial.set_constraint(st.CONSTRAINT, -1.0 if ok else 1.0)
        study.tell(trial, 10.0 * seq if ok else 0.0)
    return study


SEQS = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]


def test_only_parameters_that_varied_get_an_importance(tmp_path: Path) -> None:
    study = study_of(tmp_path, SEQS)
    imp = importances(study)
    assert set(imp.values) == {"max_num_seqs"} and imp.trials == len(SEQS)
    assert imp.constant == ("gpu_memory_utilization",)
    assert f"over {len(SEQS)} feasible trials" in imp.title
    assert "never varied: gpu_memory_utilization" in imp.note
    written = write_report(study=study, out=tmp_path / "r.html", png=True)
    text = written[0].read_text()
    assert f"Parameter importances over {len(SEQS)} feasible trials" in text
    assert [p.name for p in written[1:]] == ["r-params.png", "r-history.png", "r-importance.png"]


def test_both_parameters_when_both_varied(tmp_path: Path) -> None:
    imp = importances(study_of(tmp_path, SEQS, util=None))
    assert set(imp.values) == {"max_num_seqs", "gpu_memory_utilization"} and not imp.constant
    assert "never varied" not in imp.note


@pytest.mark.parametrize("feasible", [4, MIN_FEASIBLE - 1])
def test_too_few_feasible_trials_give_a_caveat_not_a_chart(tmp_path: Path, feasible: int) -> None:
    study = study_of(tmp_path, SEQS[:feasible], util=None, failed=5)  # failures do not count
    imp = importances(study)
    assert imp.values == {} and imp.trials == feasible
    caveat = f"parameter importances need {MIN_FEASIBLE} feasible trials ({feasible})"
    assert imp.note.startswith(caveat)
    written = write_report(study=study, out=tmp_path / "few.html", png=True)
    text = written[0].read_text()
    assert caveat in text and "Parameter importances over" not in text
    assert not any(p.name.endswith("-importance.png") for p in written)


def test_no_parameter_varied_gives_a_caveat(tmp_path: Path) -> None:
    imp = importances(study_of(tmp_path, [64] * MIN_FEASIBLE))
    assert imp.values == {} and set(imp.constant) == set(DIMS)
    assert f"no tuned parameter varied over the {MIN_FEASIBLE} feasible trials" in imp.note
