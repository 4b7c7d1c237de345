"""A trial's result: everything one launch learned, typed; ``record()`` is what the study
stores of it. No Optuna here (``autotune.search.tell`` tells Optuna)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autotune.engine.launcher import ArgValue
from autotune.engine.outcome import Outcome, StartupInfo
from autotune.load.metrics import Metrics
from autotune.trial.capacity import Capacity
from autotune.trial.record import TrialRecord


@dataclass(frozen=True)
class TrialResult:
    """Everything a trial learned; what Optuna is told is derived from it."""

    outcome: Outcome
    reason: str
    args: dict[str, ArgValue]
    log_path: Path
    metrics: Metrics | None = None
    startup: StartupInfo = field(default_factory=StartupInfo)
    estimated_max_model_len: int | None = None
    vllm_version: str | None = None
    startup_s: float | None = None
    errors: tuple[str, ...] = ()
    memory_released: bool = True
    goodput: float | None = None  # requests/s meeting the SLOs (when SLOs are given)
    preemptions: int | None = None  # vllm:num_preemptions_total during the benchmark
    peak_memory_gib: float | None = None  # GPU memory in use at its peak (NVML), else None
    # sampled from /metrics while the benchmark ran (None: /metrics unread)
    peak_kv_cache_usage_pct: float | None = None  # vllm:kv_cache_usage_perc x 100 at its peak
    peak_requests_waiting: int | None = None  # vllm:num_requests_waiting at its peak
    peak_requests_running: int | None = None  # vllm:num_requests_running at its peak
    prefix_cache_hit_rate: float | None = None  # prefix-cache hits / queries in the benchmark
    capacity: Capacity | None = None  # --objective capacity: the rate search on this engine

    @property
    def throughput(self) -> float:
        return self.metrics.output_throughput if self.metrics else 0.0

    def record(self) -> TrialRecord:
        """What the study stores of this result (its user attributes)."""
        return TrialRecord(
            launched=True,
            outcome=self.outcome.value,
            reason=self.reason,
            vllm_args=dict(self.args),
            log=str(self.log_path),
            metrics=self.metrics,
            startup=self.startup,
            estimated_max_model_len=self.estimated_max_model_len,
            vllm_version=self.vllm_version,
            startup_s=round(self.startup_s, 2) if self.startup_s is not None else None,
            errors=self.errors,
            goodput=self.goodput,
            preemptions=self.preemptions,
            peak_memory_gib=self.peak_memory_gib,
            peak_kv_cache_usage_pct=self.peak_kv_cache_usage_pct,
            peak_requests_waiting=self.peak_requests_waiting,
            peak_requests_running=self.peak_requests_running,
            prefix_cache_hit_rate=self.prefix_cache_hit_rate,
            capacity=self.capacity,
        )
