"""One trial: candidate arguments → launch → benchmark → classified result.

No Optuna here: ``autotune.search.tell`` turns a ``TrialResult`` into Optuna's ``tell``. That
keeps this module usable for one-off measurements (``profiles verify``) and testable without a
study.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autotune.engine import launcher
from autotune.engine.launcher import ArgValue, Ready
from autotune.engine.outcome import (
    Classified,
    Outcome,
    parse_startup,
)
from autotune.engine.probes import (
    PeakLoad,
    PeakMemory,
    hit_rate,
    preemptions,
    prefix_cache_counts,
)
from autotune.errors import StudyStopped
from autotune.load import client as loadgen
from autotune.load.arrivals import Arrivals
from autotune.load.metrics import RequestRecord, goodput
from autotune.load.request import Request
from autotune.load.stall import STALLED, StallWatch, first_wave_s
from autotune.trial.rate_search import CapacitySearch, StepMonitor
from autotune.trial.result import TrialResult
from autotune.trial.verdict import MAX_FAILED_SHARE, PRUNED, blames_tuned_dimension, hung, judge

__all__ = ["MAX_FAILED_SHARE", "PRUNED", "REPORT_STEPS", "Report", "TrialResult", "TrialRunner"]

REPORT_STEPS = 10  # intermediate values per benchmark (for a pruner)
# step, {"throughput": .., "goodput": ..} so far → True to stop the benchmark (pruned)
Report = Callable[[int, Mapping[str, float]], bool]


@dataclass(frozen=True)
class TrialRunner:
    """Runs candidates of one study: same command, model, requests and deadlines for all."""

    command: Sequence[str]
    model: str
    requests: Sequence[Request]
    extra_args: Sequence[str] = ()
    fixed_by_user: frozenset[str] = frozenset()
    startup_timeout_s: float = 900.0
    bench_timeout_s: float = 1800.0
    env: Mapping[str, str] | None = None
    max_concurrency: int | None = None  # --concurrency: at most this many requests in flight
    arrivals: Arrivals | None = None  # --request-rate/--trace: when each request is sent
    warmup: Sequence[Request] = ()  # sent first, not measured
    slos: Mapping[str, float] = field(default_factory=dict)  # metric key → limit, for goodput
    report: Report | None = None  # this trial's pruner: intermediate values (never the warm-up)
    stall_timeout_s: float | None = None  # --stall-timeout; None: derived (``load.stall``)
    lease_dir: Path | None = None  # where each engine's lease is kept (``engine.lease``)
    capacity: CapacitySearch | None = None  # --objective capacity: a rate search, not one run

    def run(
        self, *, args: Mapping[str, ArgValue], log_path: Path, on_phase: Callable[[str], None]
    ) -> TrialResult:
        """Launch and measure one candidate. Raises ``StudyStopped`` on the user's own errors."""
        args = dict(args)
        on_phase("starting engine")
        with self._launch(args, log_path) as (engine, ready):
            result = self._measure(engine, ready, args, engine.log_path, on_phase)
        if not engine.memory_released:  # NVML still shows the dead engine's memory
            result = replace(
                result,
                outcome=Outcome.HARNESS_ERROR,
                reason="GPU memory not released after the engine stopped; " + result.reason,
                memory_released=False,
            )
        return result

    def _launch(
        self, args: dict[str, ArgValue], log_path: Path
    ) -> AbstractContextManager[tuple[launcher.Engine, Ready | Classified]]:
        return launcher.launch(
            command=self.command,
            model=self.model,
            args=args,
            extra=self.extra_args,
            log_path=log_path,
            startup_timeout_s=self.startup_timeout_s,
            env=self.env,
            lease_dir=self.lease_dir,
        )

    def _measure(
        self,
        engine: launcher.Engine,
        ready: Ready | Classified,
        args: dict[str, ArgValue],
        log_path: Path,
        on_phase: Callable[[str], None],
    ) -> TrialResult:
        if isinstance(ready, Classified):
            self._stop_on_user_error(ready)
            startup = parse_startup(engine.log_text())
            return TrialResult(
                outcome=ready.outcome,
                reason=ready.reason,
                args=args,
                log_path=log_path,
                startup=startup,
                estimated_max_model_len=ready.estimated_max_model_len,
                vllm_version=startup.vllm_version,
            )
        if self.warmup:
            on_phase(f"warm-up: {len(self.warmup)} requests")
            warm = self._bench(engine, ready, on_phase, requests=self.warmup)
            if (warm.aborted or "").startswith(STALLED) and engine.exited() is None:
                return TrialResult(
                    outcome=Outcome.HUNG,
                    reason=hung(warm.aborted or ""),
                    args=args,
                    log_path=log_path,
                    startup=parse_startup(engine.log_text()),
                    vllm_version=ready.version,
                    startup_s=ready.startup_s,
                )
        if self.capacity is not None:
            return self._measure_capacity(self.capacity, engine, ready, args, on_phase)
        on_phase(f"benchmark: {len(self.requests)} requests")
        with _engine_stats(ready.base_url, engine) as stats:
            result = self._bench(
                engine, ready, on_phase, requests=self.requests, report=self.report
            )
        startup = parse_startup(engine.log_text())
        bench_outcome = judge(result, engine)
        return TrialResult(
            outcome=bench_outcome.outcome,
            reason=bench_outcome.reason,
            args=args,
            log_path=log_path,
            metrics=result.metrics,
            startup=startup,
            vllm_version=ready.version or startup.vllm_version,
            startup_s=ready.startup_s,
            errors=result.errors,
            goodput=goodput(result.records, duration_s=result.metrics.duration_s, slos=self.slos)
            if self.slos
            else None,
            **stats,
        )

    def _bench(
        self,
        engine: launcher.Engine,
        ready: Ready,
        on_phase: Callable[[str], None],
        *,
        requests: Sequence[Request],
        report: Report | None = None,
        arrivals: Arrivals | None = None,
        monitor: StepMonitor | None = None,
    ) -> loadgen.BenchResult:
        """One benchmark; ``arrivals`` None: the runner's own; ``monitor``: a capacity step's."""
        pruned: list[str] = []
        watch = StallWatch(
            fixed_s=self.stall_timeout_s,
            first_pulse_s=first_wave_s(requests, concurrency=self.max_concurrency),
        )

        def died() -> str | None:
            rc = engine.exited()
            if pruned:
                return pruned[0]
            return watch.check() if rc is None else f"engine exited with code {rc}"

        total = len(requests)
        last = [0.0]

        def progress(done: int, _total: int) -> None:
            watch.pulse()
            now = time.monotonic()
            if now - last[0] > 0.5 or done == total:
                last[0] = now
                on_phase(f"benchmark: {done}/{total} requests")

        record = monitor.on_record if monitor is not None else None
        return loadgen.run(
            base_url=ready.base_url,
            model=ready.served_model,
            requests=requests,
            max_concurrency=self.max_concurrency,
            arrivals=self.arrivals if arrivals is None else arrivals,
            timeout_s=self.bench_timeout_s,
            should_abort=died,
            on_progress=progress,
            on_record=self._reporter(total, report, pruned) if report is not None else record,
            on_chunk=watch.pulse,
            watch=monitor,
            api_key=engine.api_key,
        )

    def _measure_capacity(
        self,
        search: CapacitySearch,
        engine: launcher.Engine,
        ready: Ready,
        args: dict[str, ArgValue],
        on_phase: Callable[[str], None],
    ) -> TrialResult:
        """The capacity search on this engine (``trial.rate_search``); the trial's metrics are
        the step at capacity (else the lowest rate tried, which missed), and what ``/metrics``
        showed over the whole search (peaks, preemptions, the prefix cache's hit rate)."""

        def bench(
            requests: Sequence[Request], arrivals: Arrivals, monitor: StepMonitor | None
        ) -> loadgen.BenchResult:
            return self._bench(
                engine, ready, on_phase, requests=requests, arrivals=arrivals, monitor=monitor
            )

        seqs = args.get("max_num_seqs")
        with _engine_stats(ready.base_url, engine) as stats:
            run = search.run(
                bench=bench,
                arrivals=self.arrivals,
                max_num_seqs=seqs if isinstance(seqs, int) else None,
                base_url=ready.base_url,
                on_step=on_phase,
            )
        found = run.capacity
        shown = found.at_capacity or min(found.points, key=lambda p: p.rate, default=None)
        if run.fatal is not None:
            judged = judge(run.fatal, engine)
        elif found.rate is None:
            judged = Classified(Outcome.OK, "no request rate met the SLOs")
        else:
            judged = Classified(Outcome.OK, f"capacity {found.rate:.3g} requests/s")
        startup = parse_startup(engine.log_text())
        return TrialResult(
            outcome=judged.outcome,
            reason=judged.reason,
            args=args,
            log_path=engine.log_path,
            metrics=shown.metrics if shown is not None else run.burst.metrics,
            startup=startup,
            vllm_version=ready.version or startup.vllm_version,
            startup_s=ready.startup_s,
            errors=(run.fatal or run.burst).errors,
            capacity=found,
            **stats,
        )

    def _reporter(
        self, total: int, report: Report, pruned: list[str]
    ) -> Callable[[RequestRecord], None]:
        """Every ``total / REPORT_STEPS`` finished requests: the running throughput and goodput."""
        done: list[RequestRecord] = []
        every = max(1, total // REPORT_STEPS)

        def on_record(record: RequestRecord) -> None:
            done.append(record)
            if pruned or len(done) % every or len(done) >= total:
                return
            first = min(r.start for r in done)
            elapsed = max(r.start + r.e2e_s for r in done) - first
            if elapsed <= 0:
                return
            tokens = sum(r.output_tokens for r in done if r.ok)
            values = {"throughput": tokens / elapsed}
            if self.slos:
                values["goodput"] = goodput(done, duration_s=elapsed, slos=self.slos)
            if report(len(done) // every, values):
                pruned.append(PRUNED)

        return on_record

    def _stop_on_user_error(self, failure: Classified) -> None:
        """Model-not-found, and an invalid configuration that the user caused, end the study."""
        if failure.outcome is Outcome.MODEL_NOT_FOUND:
            raise StudyStopped(f"the engine cannot find model {self.model}: {failure.reason}")
        if failure.outcome is not Outcome.INVALID_CONFIG:
            return
        if blames_tuned_dimension(failure.reason, self.fixed_by_user):
            return  # a candidate autotune made invalid: a harness error, the study goes on
        raise StudyStopped(f"the engine rejected the settings: {failure.reason}")


@contextmanager
def _engine_stats(base_url: str, engine: launcher.Engine) -> Iterator[dict[str, Any]]:
    """What the engine showed while the block ran, as ``TrialResult`` fields: NVML's peak
    memory, the peaks of ``/metrics`` gauges, and the preemptions and prefix-cache hit rate
    (counter deltas; None when the engine died or ``/metrics`` was unread)."""
    stats: dict[str, Any] = {}
    before, cache_before = preemptions(base_url), prefix_cache_counts(base_url)
    with PeakMemory() as peak, PeakLoad(base_url) as load:
        yield stats
    after = preemptions(base_url) if engine.exited() is None else None
    cache_after = prefix_cache_counts(base_url) if after is not None else None
    stats.update(
        preemptions=None if before is None or after is None else after - before,
        peak_memory_gib=peak.peak_gib,
        peak_kv_cache_usage_pct=load.kv_cache_usage_pct,
        peak_requests_waiting=load.requests_waiting,
        peak_requests_running=load.requests_running,
        prefix_cache_hit_rate=hit_rate(before=cache_before, after=cache_after),
    )
