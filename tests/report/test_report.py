"""autotune report: the HTML page and the PNGs of a study recorded the way tune records it."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import optuna
import pytest
from PIL import Image

from autotune.app.views import write_study_report
from autotune.engine.outcome import Outcome
from autotune.errors import UserError
from autotune.load.metrics import Metrics
from autotune.report.data import tick
from autotune.report.html import write_report
from autotune.search import study as st
from autotune.search import tell
from autotune.trial.runner import TrialResult
from tests.conftest import FAKE_CMD, run_autotune

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
        tell.tell(study, trial, result)
    study.set_user_attr("chosen_trial", 4)
    return study


@pytest.mark.slow
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
    done = run_autotune("report", "-o", tmp_path / "y.html", timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no studies yet" in done.stderr


def test_every_trial_and_class_is_in_the_table_and_the_charts(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = recorded_study(storage, tmp_path)
    out = tmp_path / "report.html"
    write_report(study=study, out=out, png=False)
    text = out.read_text()
    cells = re.findall(r"<tr(?: class=\"chosen\")?><td>(\d+)", text)
    assert [int(c) for c in cells] == [t.number for t in study.trials]
    assert text.count('class="chosen"') == 1
    assert len(re.findall(r"<script[^>]*\bsrc=", text)) == 0  # plotly.js inline: opens offline
    assert "Parameter importances</h2>" in text and "Optimization history</h2>" in text
    figure = re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*\{", text, re.S)
    assert figure is not None  # the parameter chart: failure classes as the band's categories
    traces = json.loads(figure.group(1))
    infeasible = [t for t in traces if t["name"] == "infeasible"]
    assert {y for t in infeasible for y in t["y"]} == {"oom_profiling", "kv_too_small"}
    assert {y for t in traces if t["name"] == "failed" for y in t["y"]} == {"harness_error"}


def test_few_feasible_trials_skip_importances_with_a_note(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'one.db'}", study_name="one")
    for value, outcome in ((10.0, "ok"), (0.0, "oom_weights")):
        trial = study.ask(DIMS)
        trial.set_user_attr("outcome", outcome)
        trial.set_constraint(st.CONSTRAINT, -1.0 if value else 1.0)
        study.tell(trial, value)
    written = write_report(study=study, out=tmp_path / "one.html", png=True)
    assert "parameter importances need 10 feasible trials (1)" in written[0].read_text()
    assert [p.name for p in written[1:]] == ["one-params.png", "one-history.png"]


@pytest.mark.slow
def test_the_study_with_the_latest_trial_is_chosen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    recorded_study(storage, tmp_path)
    other = optuna.create_study(storage=storage, study_name="m@other@w@throughput@1")
    other.add_trial(optuna.trial.create_trial(value=1.0, params={"x": 1}, distributions={
        "x": optuna.distributions.IntDistribution(0, 2)}))  # fmt: skip
    trial = optuna.load_study(study_name=NAME, storage=storage).ask()  # newest trial: NAME's
    trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)
    out = tmp_path / "r.html"
    with caplog.at_level(logging.INFO, logger="autotune"):
        write_study_report(model=None, storage=storage, study_name=None, state_dir=None, out=out,
                           png=False)  # fmt: skip
    assert f"<h2>{NAME}</h2>" in out.read_text()
    assert f"reporting {NAME}" in caplog.text
    write_study_report(model=None, storage=storage, study_name="m@other@w@throughput@1",
                       state_dir=None, out=out, png=False)  # fmt: skip
    assert "<h2>m@other@w@throughput@1</h2>" in out.read_text()


@pytest.mark.parametrize(
    ("value", "label"),
    [(512, "512"), (1024, "1k"), (131072, "128k"), (256 << 20, "256M"), (8 << 30, "8G"),
     (5000, "5000"), (15000, "15k"), (1.5e6, "1.5M"), (0.85, "0.85")],
)  # fmt: skip
def test_tick_labels(value: float, label: str) -> None:
    assert tick(value) == label


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_report_of_a_real_fake_engine_study(model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "AUTOTUNE_FAKE_STARTUP_S": "0.1", "AUTOTUNE_FAKE_TIME_SCALE": "0.02",
           "AUTOTUNE_FAKE_GPU_MEMORY_GIB": "24"}  # fmt: skip
    tune = ["tune", str(model_dir), "--vllm-cmd", FAKE_CMD, "--gpu", "L4:24", "--trials", "4",
            "--max-num-seqs", "8:64", "--max-model-len", "2048:32768", "--input-len", "64",
            "--output-len", "8", "--num-prompts", "16", "--seed", "3", "--quiet"]  # fmt: skip
    out = tmp_path / "real" / "autotune-report.html"
    report = ["report", str(model_dir), "-o", str(out), "--png"]
    for args in (tune, report):
        done = run_autotune(*args, env=env, timeout=100)
        assert done.returncode == 0, done.stderr
    written = [Path(line) for line in done.stdout.split()]
    names = ["autotune-report-params.png", "autotune-report-history.png"]
    assert written[:3] == [out, *(out.with_name(n) for n in names)]
    storage = f"sqlite:///{tmp_path / 'state' / 'studies.db'}"
    (name,) = st.find_studies(storage, model=None)
    trials = st.load_study(name, storage).trials
    text = out.read_text()
    assert len(trials) == 4 and f"<h2>{name}</h2>" in text
    for t in trials:
        assert f"<td>{t.number}" in text and t.user_attrs["outcome"] in text
    for png in written[1:]:
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 500
