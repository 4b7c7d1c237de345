"""Generated engine output (brackets, rich-markup look-alikes, control characters, secrets in
the forms vLLM prints them) through the trial log copy, the classification and the display:
nothing raises, and the secret never comes out."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rich.console import Console

from autotune import masking
from autotune.engine.enginelog import EngineLog
from autotune.engine.outcome import Outcome, classify_runtime, classify_startup, parse_startup
from autotune.report.progress import LineReporter, LiveReporter, trials_table
from autotune.search import study as studies
from autotune.search import tell
from autotune.trial.runner import TrialResult

FUZZ = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
FRAGMENTS = [
    "[/v1/completions]", "[bold red]", "[/]", "[link=file:///etc/passwd]", "\\", "\\[", "]",
    "\x1b[31m", "\x00", "\r", "\n", "\t", "ERROR 12-02 09:32:08 [core.py:1081] ",
    "torch.OutOfMemoryError: CUDA out of memory. ", "ValueError: ", "Traceback (most recent call",
    "GPU KV cache size: 1,234 tokens\n", "Maximum concurrency for 4,096 tokens per request: ",
    "non-default args: {", "'max_num_seqs': 8, ", "unrecognized arguments: ", "api_key", "=",
    "': '", "KeyError: 'x'", "\ufffd", "é", "🙂",
]  # fmt: skip
any_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
noise = st.lists(st.one_of(any_text, st.sampled_from(FRAGMENTS)), max_size=12).map("".join)
# A user's secret: printable, no spaces; "ZqX" first so that autotune's own framing (trial
# numbers, paths) can never contain it by chance.
secrets = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=30
).map(lambda s: "ZqX" + s)
# How vLLM, argparse or a URL shows a secret flag's value.
FORMS: list[Callable[[str], str]] = [
    lambda s: f"non-default args: {{'model_tag': 'm', 'api_key': ['{s}']}}",
    lambda s: f"Namespace(api_key='{s}', hf_token=None)",
    lambda s: f"vllm serve: error: unrecognized arguments: --hf-token={s}",
    lambda s: f"--api-key {s}",
    lambda s: f"Authorization: Bearer {s}",
    lambda s: f'{{"hf_token": "{s}"}}',
]
user_forms = st.sampled_from([*FORMS, lambda s: s, lambda s: f"postgresql://u:{s}@db/x"])


@contextlib.contextmanager
def remembered(secret: str) -> Iterator[None]:
    """The secret as the user passed it, forgotten afterwards (other tests must not see it)."""
    before = masking._known
    masking.remember([secret])
    try:
        yield
    finally:
        masking._known = before


def _engine_log(text: str, secret: str) -> str:
    """``text`` as the engine's output, through the masked copy into its log."""
    with tempfile.TemporaryDirectory() as tmp:
        log = EngineLog(Path(tmp) / "trial.log", secrets=[secret])
        log.write(f"$ vllm serve m --api-key {secret}\n")
        log.sink.write(text.encode("utf-8", "surrogateescape"))
        log.spawned()
        log.close()
        return log.path.read_text(encoding="utf-8", errors="replace")


@FUZZ
@given(before=noise, after=noise, secret=secrets, form=user_forms)
def test_engine_output_never_leaks_a_user_secret(
    before: str, after: str, secret: str, form: Callable[[str], str]
) -> None:
    text = _engine_log(f"{before}\n{form(secret)} {after}\n{form(secret)}", secret)
    assert secret not in text and "***" in text
    for verdict in (classify_startup(text, returncode=1), classify_runtime(text)):
        assert isinstance(verdict.outcome, Outcome) and secret not in verdict.reason
    parse_startup(text)


@FUZZ
@given(
    before=noise,
    after=noise,
    secret=st.text("abcdefXYZ0123456789_-", min_size=1, max_size=20).map(lambda s: "ZqX" + s),
    form=st.sampled_from(FORMS),
    space=st.sampled_from(["\n", " ", "\t"]),
)
def test_printed_secret_flags_are_masked_unremembered(
    before: str, after: str, secret: str, form: Callable[[str], str], space: str
) -> None:
    """vLLM prints a secret flag's value (from its own environment, say): masked by its name,
    whatever comes before it (`api_key= ` swallowing the next name must not hide its value)."""
    assume(secret not in before + after)
    shown = masking.mask(f"{before}{space}{form(secret)} {after}")
    assert secret not in shown


def _trial(reason: str) -> optuna.trial.FrozenTrial:
    study = studies.open_study(name="fuzz", storage=optuna.storages.InMemoryStorage(), seed=0)
    trial = study.ask({"max_num_seqs": optuna.distributions.IntDistribution(8, 512)})
    trial.set_user_attr("launched", True)
    result = TrialResult(
        outcome=Outcome.STARTUP_CRASH,
        reason=reason,
        args=dict(trial.params),
        log_path=Path("/logs") / reason[:20].replace("\x00", "") / "trial.log",
    )
    tell.tell(study, trial, result)
    return study.trials[0]


@FUZZ
@given(before=noise, after=noise, secret=secrets, form=user_forms)
def test_display_never_raises_nor_leaks(
    before: str, after: str, secret: str, form: Callable[[str], str]
) -> None:
    reason = f"{before}{form(secret)} {after}"
    out, err = io.StringIO(), io.StringIO()
    with remembered(secret), contextlib.redirect_stderr(err):
        trial = _trial(reason)
        console = Console(file=out, width=300, force_terminal=False)
        live = LiveReporter(console=console)
        live.phase(reason)
        live.trial_finished(trial)
        live.trial_skipped(trial)
        console.print(trials_table(studies.trial_rows([trial]), best=0, title=reason))
        LineReporter().trial_finished(trial)
    assert secret not in out.getvalue() and secret not in err.getvalue()
