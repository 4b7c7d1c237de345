"""What vLLM's ``/metrics`` showed during a benchmark: from a ``TrialResult`` into the trial's
record, ``autotune trials`` (table and JSON) and the profile's ``metrics``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rich.console import Console

from autotune.engine.launcher import ArgValue
from autotune.engine.outcome import Outcome
from autotune.load.metrics import Metrics
from autotune.profiles.build import Chosen
from autotune.report.progress import trials_table
from autotune.trial.record import RESULT_FIELDS, TrialRecord, TrialRow
from autotune.trial.runner import TrialResult

ARGS: dict[str, ArgValue] = {"gpu_memory_utilization": 0.9, "max_num_seqs": 64}


def metrics() -> Metrics:
    values: dict[str, Any] = {f.name: 1.0 for f in dataclasses.fields(Metrics)}
    ints = ("completed", "failed", "input_tokens", "output_tokens", "max_concurrency")
    return Metrics(**(values | dict.fromkeys(ints, 1) | {"output_throughput": 512.0}))


def result(**kw: Any) -> TrialResult:
    return TrialResult(
        outcome=Outcome.OK, reason="", args=ARGS, log_path=Path("t.log"), metrics=metrics(), **kw
    )


def stored(res: TrialResult) -> TrialRecord:
    """As ``search.tell`` writes a result and every reader reads it back."""
    return TrialRecord.from_attrs(res.record().to_attrs(only=RESULT_FIELDS) | {"launched": True})


def row(record: TrialRecord, number: int = 0) -> TrialRow:
    return TrialRow.of(number=number, state="COMPLETE", record=record, params={}, running=False)


def test_engine_stats_are_stored_and_read_back() -> None:
    record = stored(
        result(
            preemptions=12,
            peak_kv_cache_usage_pct=97.5,
            peak_requests_waiting=30,
            peak_requests_running=64,
        )
    )
    assert (record.preemptions, record.peak_kv_cache_usage_pct) == (12, 97.5)
    assert (record.peak_requests_waiting, record.peak_requests_running) == (30, 64)
    assert record.engine_stats == {
        "preemptions": 12,
        "peak_kv_cache_usage_pct": 97.5,
        "peak_requests_waiting": 30,
        "peak_requests_running": 64,
    }
    as_json = row(record).to_dict()
    assert as_json["preemptions"] == 12 and as_json["peak_kv_cache_usage_pct"] == 97.5
    assert as_json["peak_requests_waiting"] == 30 and as_json["peak_requests_running"] == 64


def test_a_trial_of_an_earlier_version_reads_as_unknown() -> None:
    record = TrialRecord.from_attrs({"outcome": "ok", "launched": True, "vllm_args": ARGS})
    assert record.peak_kv_cache_usage_pct is None and record.engine_stats == {}
    assert row(record).to_dict()["peak_kv_cache_usage_pct"] is None


def test_the_trials_table_shows_kv_peak_and_preemptions() -> None:
    busy = stored(result(preemptions=1234, peak_kv_cache_usage_pct=99.31))
    unread = stored(result())  # /metrics could not be read: empty cells, not zeros
    console = Console(record=True, width=200)
    console.print(trials_table([row(busy, 0), row(unread, 1)], best=0, title="study"))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "KV peak %" in line)
    assert "preempt" in header and header.index("KV peak %") < header.index("preempt")
    first = next(line for line in lines if line.strip("│ ").startswith("0*"))
    second = next(line for line in lines if line.strip("│ ").startswith("1 "))
    cells = [c.strip() for c in first.split("│")]
    assert "99.3" in cells and "1,234" in cells  # one decimal, thousands grouped
    empty = [c.strip() for c in second.split("│")]
    col = [c.strip() for c in header.split("┃")].index("KV peak %")
    assert empty[col] == "" and empty[col + 1] == ""


def test_the_profile_metrics_keep_them() -> None:
    record = stored(result(preemptions=0, peak_kv_cache_usage_pct=41.0, peak_requests_running=8))
    chosen = Chosen.of(record, number=3, study="s", num_prompts=10, sections={})
    assert chosen.metrics["output_throughput"] == 512.0
    assert chosen.metrics["preemptions"] == 0 and chosen.metrics["peak_kv_cache_usage_pct"] == 41.0
    assert chosen.metrics["peak_requests_running"] == 8
    assert "peak_requests_waiting" not in chosen.metrics  # never read: left out
