"""The trial record: what one trial of a study says, typed. The only module that knows the keys
of a trial's user attributes in Optuna's storage; every reader goes through ``TrialRecord``.

``TrialRecord.of(trial)`` reads a trial (unknown keys are ignored, missing ones
take their defaults, so studies written by earlier versions still read); ``attrs(**fields)`` turns
typed values into the JSON-safe attributes to store, key by key, as a trial's life goes on
(``launched`` and ``vllm_args`` before the launch, the result after it). No Optuna here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from autotune.engine.outcome import Outcome, StartupInfo
from autotune.errors import UserError
from autotune.load.metrics import Metrics
from autotune.trial.capacity import Capacity

# Outcomes of trials that never produced a result of their own (not engine outcomes).
RUNNING = "running"
STOPPED = "stopped"  # the user's own error stopped the study
INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM: the candidate runs again next time
OVER_BUDGET = "over_budget"  # another worker took the last launch
NO_RESULT = (INTERRUPTED, Outcome.PRUNED.value, STOPPED, OVER_BUDGET)
REMEASURE = "re-measure of trial"  # source of a finalist launched again exactly as it ran


def remeasure_source(trial: int) -> str:
    """The source of a re-measure of ``trial``."""
    return f"{REMEASURE} {trial}"


class HasAttrs(Protocol):
    """A trial as Optuna keeps it (``FrozenTrial``, ``Trial``): its user attributes."""

    @property
    def user_attrs(self) -> dict[str, Any]: ...


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """One trial's user attributes. ``outcome`` is an ``Outcome`` value or one of the
    harness's own (``stopped``, ``interrupted``, ``over_budget``); None before a result."""

    outcome: str | None = None
    reason: str = ""
    vllm_args: dict[str, Any] = field(default_factory=dict)  # every argument the engine ran with
    params: dict[str, Any] | None = None  # the parameters that ran (after the guide's lift)
    source: str = ""  # who proposed it: vllm-defaults, --enqueue, edge: ..., retry of N,
    # re-measure of trial N
    launched: bool = False
    log: str | None = None
    metrics: Metrics | None = None
    startup: StartupInfo = field(default_factory=StartupInfo)
    estimated_max_model_len: int | None = None  # vLLM's estimate after a KV-too-small failure
    predicted_kv_cache_tokens: int | None = None  # the memory model's, before the launch
    vllm_version: str | None = None
    startup_s: float | None = None
    errors: tuple[str, ...] = ()
    goodput: float | None = None  # requests/s meeting the SLOs (when SLOs are given)
    preemptions: int | None = None  # vllm:num_preemptions_total during the benchmark
    peak_memory_gib: float | None = None  # NVML's peak, else None
    # /metrics sampled during the benchmark (None: unread, or written by an earlier version)
    peak_kv_cache_usage_pct: float | None = None  # vllm:kv_cache_usage_perc x 100 at its peak
    peak_requests_waiting: int | None = None  # vllm:num_requests_waiting at its peak
    peak_requests_running: int | None = None  # vllm:num_requests_running at its peak
    # vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total during the benchmark
    prefix_cache_hit_rate: float | None = None
    capacity: Capacity | None = None  # --objective capacity: the rate search on this engine
    reserved_gib: float | None = None  # GPU memory the configuration reserves
    reserved_source: str | None = None  # where that number came from
    missed: tuple[str, ...] = ()  # SLOs (or the floor) a served configuration missed
    worker: str | None = None  # the worker that launched it (many workers on one study)
    gpus: str | None = None  # the GPUs it ran on (``--gpus``)

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.OK.value

    @property
    def remeasure(self) -> bool:
        """A finalist's configuration launched again (``search.finalize.remeasure``)."""
        return self.source.startswith(REMEASURE)

    @property
    def engine_stats(self) -> dict[str, float | int]:
        """What vLLM's ``/metrics`` showed during the benchmark, the numbers it had (for the
        profile's ``metrics``)."""
        values = {name: getattr(self, name) for name in ENGINE_STATS}
        return {name: value for name, value in values.items() if value is not None}

    @property
    def throughput(self) -> float | None:
        """Output tokens/s measured, None without a benchmark."""
        return self.metrics.output_throughput if self.metrics is not None else None

    @property
    def kv_cache_tokens(self) -> int | None:
        return self.startup.kv_cache_tokens

    @classmethod
    def of(cls, trial: HasAttrs) -> TrialRecord:
        """The record of a trial (anything with Optuna's ``user_attrs``)."""
        return cls.from_attrs(trial.user_attrs)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        """Read a trial's user attributes."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in attrs.items() if k in known and v is not None}
        values["vllm_args"] = dict(values.get("vllm_args") or {})
        if values.get("params") is not None:
            values["params"] = dict(values["params"])
        values["metrics"] = _metrics(values.get("metrics"))
        values["startup"] = StartupInfo.from_dict(values.get("startup") or {})
        values["errors"] = tuple(values.get("errors") or ())
        values["missed"] = tuple(values.get("missed") or ())
        values["launched"] = bool(values.get("launched"))
        values["capacity"] = _capacity(values.get("capacity"))
        return cls(**values)

    def to_attrs(self, *, only: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The fields (``only`` these) as JSON-safe attributes (the inverse of ``from_attrs``)."""
        names = only or tuple(f.name for f in dataclasses.fields(self))
        return attrs(**{name: getattr(self, name) for name in names})


# What vLLM's /metrics showed during the benchmark.
ENGINE_STATS = (
    "preemptions", "peak_kv_cache_usage_pct", "peak_requests_waiting", "peak_requests_running",
    "prefix_cache_hit_rate",
)  # fmt: skip
# The fields a launch's result sets (``TrialResult.record``); the rest are set around it.
RESULT_FIELDS = (
    "outcome", "reason", "vllm_args", "log", "metrics", "startup", "estimated_max_model_len",
    "vllm_version", "startup_s", "errors", "goodput", "peak_memory_gib", "capacity",
    *ENGINE_STATS,
)  # fmt: skip


def attrs(**fields: Any) -> dict[str, Any]:
    """JSON-safe user attributes for the given ``TrialRecord`` fields (checked by name)."""
    known = {f.name for f in dataclasses.fields(TrialRecord)}
    unknown = set(fields) - known
    if unknown:
        raise TypeError(f"not trial record fields: {sorted(unknown)}")
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, (Metrics, StartupInfo, Capacity)):
            value = value.to_dict()
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        elif isinstance(value, Outcome):
            value = value.value
        out[name] = value
    return out


class Settable(Protocol):
    """A running trial (``optuna.Trial``): what ``store`` needs of it."""

    def set_user_attr(self, key: str, value: Any) -> None: ...


def write(trial: Settable, values: Mapping[str, Any]) -> None:
    """Write JSON-safe user attributes (``attrs``, ``TrialRecord.to_attrs``) to a running trial."""
    for key, value in values.items():
        trial.set_user_attr(key, value)


def store(trial: Settable, **fields: Any) -> None:
    """Write the given ``TrialRecord`` fields to a running trial."""
    write(trial, attrs(**fields))


def _metrics(raw: Any) -> Metrics | None:
    if not isinstance(raw, Mapping) or not raw:
        return None
    try:
        return Metrics.from_dict(raw)
    except UserError:  # written by another version: not comparable
        return None


def _capacity(raw: Any) -> Capacity | None:
    if not isinstance(raw, Mapping) or not raw:
        return None
    try:
        return Capacity.from_dict(raw)
    except UserError:  # written by another version
        return None


@dataclass(frozen=True, kw_only=True)
class TrialRow:
    """One trial as a table row (``autotune trials``, the report) and its JSON."""

    number: int
    state: str
    outcome: str
    args: dict[str, Any]
    throughput: float | None
    ttft_p95_ms: float | None
    tpot_p95_ms: float | None
    kv_cache_tokens: int | None
    predicted_kv_cache_tokens: int | None
    preemptions: int | None
    peak_kv_cache_usage_pct: float | None
    peak_requests_waiting: int | None
    peak_requests_running: int | None
    prefix_cache_hit_rate: float | None  # prefix-cache hits / queries in the benchmark (0-1)
    capacity_rps: float | None  # --objective capacity: requests/s within the SLOs
    reason: str
    estimated_max_model_len: int | None
    log: str
    source: str

    @classmethod
    def of(
        cls,
        *,
        number: int,
        state: str,
        record: TrialRecord,
        params: Mapping[str, Any],
        running: bool,
    ) -> TrialRow:
        m = record.metrics
        return cls(
            number=number,
            state=state,
            outcome=record.outcome or (RUNNING if running else "-"),
            args=dict(record.vllm_args or params),
            throughput=m.output_throughput if m else None,
            ttft_p95_ms=m.ttft_ms_p95 if m else None,
            tpot_p95_ms=m.tpot_ms_p95 if m else None,
            kv_cache_tokens=record.startup.kv_cache_tokens,
            predicted_kv_cache_tokens=record.predicted_kv_cache_tokens,
            preemptions=record.preemptions,
            peak_kv_cache_usage_pct=record.peak_kv_cache_usage_pct,
            peak_requests_waiting=record.peak_requests_waiting,
            peak_requests_running=record.peak_requests_running,
            prefix_cache_hit_rate=record.prefix_cache_hit_rate,
            capacity_rps=record.capacity.rate if record.capacity is not None else None,
            reason=record.reason,
            estimated_max_model_len=record.estimated_max_model_len,
            log=record.log or "",
            source=record.source,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
