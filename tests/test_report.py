"""autotune report: the HTML page and the PNGs of a study recorded the way tune records it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from PIL import Image

from autotune import study as st
from autotune.errors import UserError
from autotune.metrics import Metrics
from autotune.objective import TrialResult
from autotune.outcome import Outcome
from autotune.reports import write_study_report

pytest.importorskip("plotly")
pytest.importorskip("matplotlib")

NAME = "m@l4-24gib-x1@in512-out128@throughput@abc123"
DIMS = {
    "gpu_memory_utilization": optuna.distributions.FloatDistribution(0.5, 0.98),
    "max_num_seqs": optuna.distributions.IntDistribution(8, 512, log=True),
}
# (outcome, throughput) per trial: two failure classes, one harness error
PLAN = [
    (Outcome.OK, 900.0), (Outcome.OOM_PROFILING, 0.0), (Outcome.OK, 1200.0),
    (Outcome.KV_TOO_SMALL, 0.0), (Outcome.OK, 1500.0), (Outcome.HARNESS_ERROR, 0.0),
    (Outcome.OK, 1100.0),
]  # fmt: skip


def metrics(tput: float) -> Metrics:
    fields = {f: 1.0 for f in Metrics.__dataclass_fields__}
    ints = {"completed": 10, "failed": 0, "input_tokens": 100, "output_tokens": 50}
    return Metrics.from_dict({**fields, **ints, "max_concurrency": 4, "output_throughput": tput})


def recorded_study(storage: str, tmp_path: Path) -> optuna.Study:
    study = st.open_study(name=NAME, storage=storage, seed=0)
    study.set_user_attr("model", {"id": "m", "architecture": "LlamaForCausalLM"})
    study.set_user_attr("workload", {"signature": "in512-out128"})
    for outcome, tput in PLAN:
        trial = study.ask(DIMS)
        trial.set_user_attr("launched", True)
        result = TrialResult(
            outcome=outcome,
            reason=f"{outcome.value} because of reasons" if tput == 0 else "",
            args=dict(trial.params),
            log_path=tmp_path / f"trial-{trial.number}.log",
            metrics=metrics(tput) if tput else None,
        )
        st.tell(study, trial, result)
    study.set_user_attr("chosen_trial", 4)
    return study


def test_report_shows_every_trial_class_and_the_chosen_one(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    recorded_study(storage, tmp_path)
    out = tmp_path / "r" / "report.html"
    written = write_study_report(
        model=None, storage=storage, study_name=None, state_dir=None, out=out, png=True
    )
    text = out.read_text()
    assert written[0] == out and "Plotly.newPlot" in text
    assert 'src="https://cdn.plot.ly' not in text  # the JavaScript is inline
    for outcome in ("oom_profiling", "kv_too_small", "harness_error"):
        assert outcome in text
    assert "4 &#9733; chosen" in text and 'class="chosen"' in text
    assert "1500.0" in text and "single objective: no Pareto front" in text
    assert "Pareto front</h2>" not in text
    pngs = [p for p in written if p.suffix == ".png"]
    assert {p.name for p in pngs} >= {"report-params.png", "report-history.png"}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as image:
            assert image.width > 500 and image.height > 300
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 50  # drawn, not blank


def test_multi_objective_study_gets_a_pareto_front(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'mo.db'}"
    study = optuna.create_study(
        study_name="m@x@w@pareto@1", storage=storage, directions=["maximize", "minimize"]
    )
    for i in range(5):
        trial = study.ask(DIMS)
        trial.set_user_attr("outcome", "ok")
        trial.set_constraint(st.CONSTRAINT, -1.0)
        study.tell(trial, [100.0 * (i + 1), 10.0 * (i + 1)])
    out = tmp_path / "mo.html"
    write_study_report(model=None, storage=storage, study_name=None, state_dir=None, out=out,
                       png=False)  # fmt: skip
    assert "Pareto front</h2>" in out.read_text()


def test_missing_studies_are_one_line_errors(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    recorded_study(storage, tmp_path)
    with pytest.raises(UserError, match=r"no study 'nope' in .* \(studies: m@l4"):
        write_study_report(model=None, storage=storage, study_name="nope", state_dir=None,
                           out=tmp_path / "x.html", png=False)  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "autotune", "report", "-o", str(tmp_path / "y.html")],
        capture_output=True, text=True, env=dict(os.environ), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no studies yet" in done.stderr
