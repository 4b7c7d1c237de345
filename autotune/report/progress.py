"""Progress of a study: a live display (rich) or plain log lines (``--quiet``), and tables.

Engine text, reasons, model names and paths are untrusted: they reach rich as ``Text`` (never
parsed as markup: ``[/v1/completions]`` is text) and with secrets masked."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from autotune.engine.outcome import Outcome
from autotune.masking import mask
from autotune.report.columns import Column, FittedTable
from autotune.trial.record import REMEASURE, TrialRecord, TrialRow

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

_SHORT = {
    "gpu_memory_utilization": "util",
    "kv_cache_memory_bytes": "kv",
    "max_num_seqs": "seqs",
    "max_num_batched_tokens": "batched",
    "max_model_len": "len",
    "limit_mm_per_prompt": "images",
}


def _value(name: str, value: Any) -> str:
    if name == "limit_mm_per_prompt" and isinstance(value, str) and value:
        try:
            image = json.loads(value).get("image")
            if isinstance(image, dict):
                return f"{image['count']}@{image.get('width')}x{image.get('height')}"
            return str(image)
        except (ValueError, AttributeError, KeyError):
            return value  # not what autotune stores: shown as it is
    if name == "kv_cache_memory_bytes" and isinstance(value, int):
        for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if value >= size:
                return f"{value / size:.4g}{unit}"
    return str(value)


def short_args(args: Mapping[str, Any]) -> str:
    return " ".join(f"{_SHORT.get(k, k)}={_value(k, v)}" for k, v in args.items())


def _result_text(trial: FrozenTrial) -> str:
    record = TrialRecord.of(trial)
    if record.ok:
        text = f"ok {record.throughput or 0.0:.1f} tok/s"
        missed = record.missed
        return text + (f", infeasible: missed {'; '.join(missed)}" if missed else "")
    outcome = record.outcome or trial.state.name.lower()
    return f"{outcome}: {mask(record.reason)[:120]}"


def of_total(*, launch: int, budget: int, total: int | None) -> int:
    """The N of a launch's ``(n/N)``: ``--trials`` (``total``), which the study's launches,
    its re-measures and every worker's share all count against; the search's own budget (a
    part of it) when ``total`` is not known."""
    return max(total, launch) if total is not None else budget


class LiveReporter:
    """Trial n/N (launches against ``total``, ``--trials``), the candidate, each result, best
    so far, elapsed and ETA."""

    def __init__(self, *, console: Console | None = None, total: int | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.total = total
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[phase]}", markup=False),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task("tuning", total=None, phase="")
        self.best: float | None = None

    def __enter__(self) -> LiveReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def trial_started(self, *, number: int, launch: int, budget: int, args: dict[str, Any]) -> None:
        budget = of_total(launch=launch, budget=budget, total=self.total)
        self.progress.update(self.task, total=budget, completed=launch - 1, phase="")
        best = f" (best {self.best:.1f} tok/s)" if self.best is not None else ""
        self.progress.update(self.task, description=f"trial {number}{best}")
        head = Text(f"trial {number} ({launch}/{budget}):", style="dim")
        self.console.print(Text.assemble(head, " ", short_args(args)))

    def phase(self, text: str) -> None:
        self.progress.update(self.task, phase=text)

    def trial_finished(self, trial: FrozenTrial) -> None:
        record = TrialRecord.of(trial)
        if record.ok and record.throughput is not None:
            self.best = max(self.best or 0.0, record.throughput)
        self.progress.advance(self.task)
        style = "green" if record.ok else "yellow"
        result = Text(_result_text(trial), style=style)
        self.console.print(Text.assemble("  ", result, "  log: ", mask(str(record.log))))

    def trial_skipped(self, trial: FrozenTrial) -> None:
        self.console.print(Text(f"trial {trial.number}: {_result_text(trial)}", style="dim"))


class LineReporter:
    """Plain timestamped lines on stderr, for logs and CI."""

    def __init__(self, *, total: int | None = None) -> None:
        self.started = time.monotonic()
        self.total = total

    def _say(self, text: str) -> None:
        print(
            f"[autotune +{time.monotonic() - self.started:6.0f}s] {mask(text)}",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> LineReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def trial_started(self, *, number: int, launch: int, budget: int, args: dict[str, Any]) -> None:
        budget = of_total(launch=launch, budget=budget, total=self.total)
        self._say(f"trial {number} ({launch}/{budget}): {short_args(args)}")

    def phase(self, text: str) -> None:
        return None

    def trial_skipped(self, trial: FrozenTrial) -> None:
        self._say(f"trial {trial.number}: {_result_text(trial)}")

    def trial_finished(self, trial: FrozenTrial) -> None:
        log = TrialRecord.of(trial).log
        self._say(f"trial {trial.number}: {_result_text(trial)} (log: {log})")


_NOISE = re.compile(r"^(?:[\w.]+(?:Error|Exception): )+")


def _brief(row: TrialRow) -> str:
    """The gist of a failure for a table cell (the full reason is in ``trials --json``)."""
    if row.outcome == Outcome.KV_TOO_SMALL.value and row.estimated_max_model_len:
        return f"KV cache fits max_model_len <= {row.estimated_max_model_len}"
    return _NOISE.sub("", mask(row.reason))


def make_console() -> Console:
    """stderr; wide enough for the tables when it is a log file rather than a terminal (unless
    ``COLUMNS`` says how wide)."""
    console = Console(stderr=True)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(stderr=True, width=200)


# Left out first when the terminal is narrow; #, outcome, the tuned values and tok/s stay.
PREFIX_HIT = "prefix hit"  # prefix-cache hits / queries during the benchmark, in percent
CAPACITY = "req/s"  # --objective capacity: the highest request rate within the SLOs
_DROP = ("reason", "log", "source", PREFIX_HIT, "preempt", "KV peak %", "TTFT p95", "KV tokens")


def _source(text: str) -> str:
    """Who proposed a trial, in a word: the sampler, a move (``edge: …``), a re-measure."""
    if not text:
        return "tpe"
    if text.startswith(REMEASURE):
        return "re-measure " + text.removeprefix(REMEASURE).strip()
    return text.split(":", 1)[0]


def trials_table(rows: Sequence[TrialRow], *, best: int | None, title: str) -> FittedTable:
    """All trials of a study: outcome, arguments, key metrics (with the peak KV-cache usage
    and the preemptions vLLM reported during the benchmark), who proposed each, why it failed
    and its log, laid out for the terminal's width (``report.columns``)."""
    names = [n for n in _SHORT if any(n in row.args for row in rows)]
    logs = {Path(row.log).parent for row in rows if row.log}
    one_dir = len(logs) == 1
    hits = any(row.prefix_cache_hit_rate for row in rows)  # the prefix cache served something
    rates = any(row.capacity_rps is not None for row in rows)  # --objective capacity
    columns = [
        Column(name="#", keep=True),
        Column(name="outcome", justify="left", keep=True),
        *(Column(name=_SHORT[n], keep=True) for n in names),
        *([Column(name=CAPACITY, keep=True)] if rates else []),
        Column(name="tok/s", keep=True),
        Column(name="TTFT p95"),
        Column(name="KV tokens"),
        Column(name="KV peak %"),
        Column(name="preempt"),
        *([Column(name=PREFIX_HIT)] if hits else []),
        Column(name="source", justify="left", max_width=24),
        Column(name="reason", justify="left", flexible=True, max_width=60),
        Column(name="log", justify="left"),
    ]

    def num(value: Any, fmt: str = "{:.1f}") -> str:
        return "" if value is None else fmt.format(value)

    cells = []
    for row in rows:
        reason = "" if row.outcome == Outcome.OK.value else _brief(row)
        log = Path(row.log).name if one_dir and row.log else row.log
        cells.append(
            (
                f"{row.number}{'*' if row.number == best else ''}",
                str(row.outcome),
                *(_value(name, row.args.get(name, "")) for name in names),
                *([num(row.capacity_rps, "{:.3g}")] if rates else []),
                num(row.throughput),
                num(row.ttft_p95_ms),
                num(row.kv_cache_tokens, "{:,}"),
                num(row.peak_kv_cache_usage_pct),
                num(row.preemptions, "{:,}"),
                *([num(row.prefix_cache_hit_rate, "{:.0%}")] if hits else []),
                _source(row.source),
                reason,
                mask(log),
            )
        )
    notes = [f"logs in {mask(str(next(iter(logs))))}"] if one_dir else []
    return FittedTable(title=mask(title), columns=columns, rows=cells, drop=_DROP, notes=notes)
