"""Engine text, reasons, paths and profile fields are shown as text, never parsed as rich
markup, and with secrets masked: `[/v1/completions]` in an error must not crash `tune` (before
the profile is saved) nor `autotune trials`."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
from rich.console import Console

from autotune.app.views import print_profiles, print_trials
from autotune.engine.outcome import Outcome
from autotune.profiles.store import ProfileStore
from autotune.report.progress import LineReporter, LiveReporter, trials_table
from autotune.search import study as st
from autotune.search import tell
from autotune.trial.runner import TrialResult
from tests.profiles.test_store import make

NAME = "m@l4-24gib-x1@in512-out128@throughput@abc123"
DIMS: dict[str, optuna.distributions.BaseDistribution] = {
    "max_num_seqs": optuna.distributions.IntDistribution(8, 512, log=True)
}
HOSTILE = (
    "ERROR [serving.py:99] [/v1/completions] [bold red]boom[/] \\[x] [link=file:///etc]y[/link] "
    "'api_key': ['SEKRIT-KEY'] \x1b[31m["
)


def _study(storage: str | optuna.storages.BaseStorage, tmp_path: Path) -> optuna.Study:
    study = st.open_study(name=NAME, storage=storage, seed=0)
    study.set_user_attr("model", {"id": "m", "architecture": "LlamaForCausalLM"})
    study.set_user_attr("workload", {"signature": "in512-out128"})
    trial = study.ask(DIMS)
    trial.set_user_attr("launched", True)
    result = TrialResult(
        outcome=Outcome.STARTUP_CRASH,
        reason=HOSTILE,
        args=dict(trial.params),
        log_path=tmp_path / "[/logs]" / "trial-0000.log",
    )
    tell.tell(study, trial, result)
    return study


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=400, force_terminal=False), out


def test_live_display_and_table_show_hostile_text(tmp_path: Path) -> None:
    study = _study(optuna.storages.InMemoryStorage(), tmp_path)
    trial = study.trials[0]
    console, out = _console()
    reporter = LiveReporter(console=console)
    reporter.trial_started(number=0, launch=1, budget=3, args={"max_num_seqs": 8})
    reporter.phase("[/x] a phase")
    reporter.trial_finished(trial)
    reporter.trial_skipped(trial)
    console.print(trials_table(st.trial_rows(study.trials), best=None, title="[/study]"))
    text = out.getvalue()
    assert text.count("[/v1/completions]") == 3 and "[bold red]boom[/]" in text
    assert "[/logs]/trial-0000.log" in text and "[/study]" in text
    assert "SEKRIT-KEY" not in text


def test_plain_lines_mask_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _study(optuna.storages.InMemoryStorage(), tmp_path)
    LineReporter().trial_finished(study.trials[0])
    err = capsys.readouterr().err
    assert "[/v1/completions]" in err and "SEKRIT-KEY" not in err


def test_trials_command_shows_hostile_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    _study(storage, tmp_path)
    for as_json in (False, True):
        print_trials(model=None, storage=storage, state_dir=tmp_path, as_json=as_json)
        out = capsys.readouterr().out
        assert "[/v1/completions]" in out and "SEKRIT-KEY" not in out


def test_profile_list_shows_fields_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile may come from someone else: its fields are data, not markup."""
    from dataclasses import replace

    monkeypatch.setenv("COLUMNS", "400")
    store = ProfileStore(tmp_path)
    store.save(replace(make("2026-01-01T00:00:00+00:00"), objective="[/throughput]"))
    print_profiles(profiles_dir=tmp_path)
    assert "[/throughput]" in capsys.readouterr().out
