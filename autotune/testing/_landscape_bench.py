"""What the in-process landscape's benchmark saw: the requests the virtual engine served, as the
load generator records them (``RequestRecord``, ``BenchResult``), for ``trial.verdict.judge``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from autotune.load import client as loadgen
from autotune.load.metrics import RequestRecord, aggregate
from autotune.load.responses import summarise_errors
from autotune.testing._virtual_serve import Job, Served


def benchmark_of(planned: Sequence[Job | str], served: Served) -> loadgen.BenchResult:
    """The benchmark's result for ``planned`` (jobs, or the HTTP error a request got instead)
    as ``served`` ran them: per-request records and their aggregate."""
    records: list[RequestRecord] = []
    done = iter(zip(served.token_times, served.finished, strict=True))
    for job in planned:
        if isinstance(job, str):
            status = int(job.split(" ", 1)[0])
            records.append(_failed(job, status=status))
            continue
        times, finished = next(done)
        if not finished:
            records.append(_failed("engine died", status=None))
            continue
        itls = tuple(b - a for a, b in itertools.pairwise(times))
        records.append(
            RequestRecord(
                ok=True,
                prompt_tokens=job[0],
                output_tokens=len(times),
                start=0.0,
                ttft_s=times[0],
                itls_s=itls,
                e2e_s=times[-1],
                error=None,
                status=200,
            )
        )
    duration = max((r.e2e_s for r in records), default=0.0)
    return loadgen.BenchResult(
        metrics=aggregate(records, duration_s=duration),
        errors=summarise_errors(records),
        aborted=None,
        statuses={},
        records=tuple(records),
    )


def _failed(error: str, *, status: int | None) -> RequestRecord:
    return RequestRecord(
        ok=False,
        prompt_tokens=0,
        output_tokens=0,
        start=0.0,
        ttft_s=None,
        itls_s=(),
        e2e_s=0.0,
        error=error,
        status=status,
    )


class Alive:
    """The engine as ``trial.verdict.judge`` sees it after a benchmark it survived."""

    def exited(self) -> int | None:
        return None

    def log_text(self) -> str:
        return ""
