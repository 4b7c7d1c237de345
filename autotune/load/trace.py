"""``--trace FILE.jsonl``: a dataset whose rows carry their send times (``timestamp``), replayed
once in full (or its first ``--num-prompts`` rows) at those times (``load.arrivals``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from autotune.errors import UserError
from autotune.load.dataset import read_rows
from autotune.load.workload import Workload

__all__ = ["trace_workload"]


def trace_workload(workload: Workload, trace: Path) -> Workload:
    """``workload`` with the trace's rows as its requests: ``num_prompts`` is the trace's row
    count unless given, and never more (a trace is replayed, not repeated). One clear line for
    ``--dataset`` given as well."""
    if workload.dataset is not None and workload.dataset != trace:
        raise UserError("--trace FILE is the dataset as well: drop --dataset")
    rows = len(read_rows(trace))
    wanted = workload.num_prompts
    if wanted is not None and wanted > rows:
        raise UserError(
            f"--num-prompts {wanted}: the trace {trace} has {rows} rows "
            "(a trace is replayed once, not repeated)"
        )
    return replace(workload, dataset=trace, num_prompts=wanted or rows)
