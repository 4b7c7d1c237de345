"""Verify: re-measure a saved profile on this machine and compare with what it stored.

For after a vLLM, driver or host change: the same arguments, the same requests, one verdict.
The gates are the objective (output throughput) and the KV cache vLLM reports (a new vLLM that
accounts memory differently shows up there first); latencies are shown, not gated.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from rich.text import Text

from autotune.engine.outcome import Outcome
from autotune.errors import UserError
from autotune.load.workload import Workload
from autotune.profiles.store import Profile
from autotune.trial.runner import TrialResult, TrialRunner

# metric → (a startup number rather than a benchmark metric, higher is better, gated)
CHECKED: dict[str, tuple[bool, bool, bool]] = {
    "output_throughput": (False, True, True),
    "kv_cache_tokens": (True, True, True),
    "request_throughput": (False, True, False),
    "ttft_ms_p95": (False, False, False),
    "tpot_ms_p95": (False, False, False),
    "e2e_ms_p95": (False, False, False),
}


@dataclass(frozen=True)
class Drift:
    """One metric: stored against re-measured."""

    metric: str
    stored: float
    measured: float
    higher_is_better: bool
    gated: bool

    @property
    def change(self) -> float:
        """Relative change, measured ÷ stored − 1."""
        return self.measured / self.stored - 1.0 if self.stored else 0.0

    @property
    def worse_by(self) -> float:
        """How much worse it got (negative: better)."""
        return -self.change if self.higher_is_better else self.change

    def fails(self, tolerance: float) -> bool:
        return self.gated and self.worse_by > tolerance


@dataclass(frozen=True)
class Verification:
    """The verdict on one profile."""

    profile: Profile
    results: tuple[TrialResult, ...]
    drifts: tuple[Drift, ...]
    tolerance: float

    @property
    def failure(self) -> str | None:
        """Why the profile does not hold here, or None."""
        bad = [r for r in self.results if r.outcome is not Outcome.OK]
        if bad:
            r = bad[0]
            return (
                f"the profile does not run here: {r.outcome.value}: {r.reason} (log {r.log_path})"
            )
        over = [d for d in self.drifts if d.fails(self.tolerance)]
        if over:
            worst = ", ".join(f"{d.metric} {d.change:+.1%}" for d in over)
            return f"drift beyond {self.tolerance:.0%}: {worst}"
        return None


def workload_of(profile: Profile) -> tuple[Workload, int]:
    """The profile's workload and request count, checked against what it was tuned with."""
    data = {k: v for k, v in profile.workload.items() if k != "signature"}
    workload = Workload.from_dict(data)
    workload.validate()
    if workload.signature() != profile.workload_signature:
        raise UserError(
            f"the workload changed since tuning ({profile.workload_signature} → "
            f"{workload.signature()}): the dataset file differs"
        )
    return workload, int(workload.num_prompts or 64)


def measure(
    *,
    profile: Profile,
    runner: TrialRunner,
    log_dir: Path,
    repeats: int,
    tolerance: float,
    on_phase: Callable[[str], None],
) -> Verification:
    """Launch the profile ``repeats`` times and compare the medians with the stored values."""
    results: list[TrialResult] = []
    for i in range(repeats):
        on_phase(f"run {i + 1}/{repeats}")
        result = runner.run(
            args=profile.vllm_args, log_path=log_dir / f"verify-{i + 1}.log", on_phase=on_phase
        )
        results.append(result)
        if result.outcome is not Outcome.OK:
            break
    return Verification(
        profile=profile,
        results=tuple(results),
        drifts=tuple(drifts(profile, results)),
        tolerance=tolerance,
    )


def drifts(profile: Profile, results: Sequence[TrialResult]) -> list[Drift]:
    """Each checked metric both stored and measured, with the median of the runs."""
    out = []
    for metric, (at_startup, higher, gated) in CHECKED.items():
        stored = (profile.startup if at_startup else profile.metrics).get(metric)
        values = [_value(r, at_startup, metric) for r in results if r.outcome is Outcome.OK]
        measured = [v for v in values if v is not None]
        if isinstance(stored, (int, float)) and measured:
            out.append(Drift(metric, float(stored), statistics.median(measured), higher, gated))
    return out


def _value(result: TrialResult, at_startup: bool, metric: str) -> float | None:
    source = result.startup if at_startup else result.metrics
    value = getattr(source, metric, None)
    return float(value) if isinstance(value, (int, float)) else None


def drift_table(verification: Verification, *, title: str) -> Table:
    table = Table(title=Text(title), title_justify="left")  # vLLM versions: untrusted text
    for col in ("metric", "stored", "measured", "change", ""):
        table.add_column(
            col, justify="right" if col in ("stored", "measured", "change") else "left"
        )
    for d in verification.drifts:
        verdict = (
            "beyond tolerance"
            if d.fails(verification.tolerance)
            else ("ok" if d.gated else "(not gated)")
        )
        table.add_row(
            d.metric, f"{d.stored:,.1f}", f"{d.measured:,.1f}", f"{d.change:+.1%}", verdict
        )
    return table
