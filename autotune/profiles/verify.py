"""Verify: re-measure a saved profile on this machine and compare with what it stored.

For after a vLLM, driver or host change: the same arguments, the same requests, one verdict.
The gates are the objective (output throughput) and the KV cache vLLM reports (a new vLLM that
accounts memory differently shows up there first); latencies are shown, not gated. Benchmark
metrics are held to at least the spread the profile's own runs showed, and to a floor when the
profile stores fewer than three runs (its spread is then unknown).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from rich.text import Text

from autotune.engine.outcome import Outcome
from autotune.errors import UserError
from autotune.load.arrivals import Arrivals, signed
from autotune.load.workload import Workload
from autotune.profiles.store import Profile
from autotune.trial.runner import TrialResult, TrialRunner

FEW_RUNS = 3  # a profile with fewer runs than this has no trustworthy spread
UNKNOWN_SPREAD = 0.25  # the least tolerance on benchmark metrics when the spread is unknown
ADVICE = (
    "re-tune on this machine if vLLM, the driver or the GPU changed (`autotune tune`, 3 repeats "
    "store the spread), check that no other process uses the GPU, or raise --tolerance"
)

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
class Allowance:
    """The tolerances applied: the user's, and the one for benchmark metrics, which is at least
    the stored spread of the profile's runs (and ``UNKNOWN_SPREAD`` when it has too few)."""

    tolerance: float  # --tolerance: startup numbers (KV cache tokens)
    benchmark: float  # throughput and the other benchmark metrics
    runs: int  # the profile's stored runs (0: it stores none)
    spread: float | None  # their spread; None when unknown

    @property
    def known(self) -> bool:
        return self.runs >= FEW_RUNS and self.spread is not None

    def basis(self) -> str:
        """What the stored numbers rest on, in a few words."""
        if not self.runs:
            return "the profile stores no repeats"
        if self.spread is None:
            runs = "one run" if self.runs == 1 else f"{self.runs} runs, none stored"
            return f"the profile's spread is unknown ({runs})"
        if self.runs < FEW_RUNS:
            return f"the profile's spread rests on {self.runs} runs ({self.spread:.0%})"
        return f"the profile's {self.runs} runs spread {self.spread:.0%}"

    def note(self) -> str | None:
        """Why benchmark metrics are held to a wider tolerance than --tolerance, or None."""
        if self.benchmark <= self.tolerance:
            return None
        held = (
            f"{self.basis()}: throughput is held to {self.benchmark:.0%}, not {self.tolerance:.0%}"
        )
        return held if self.known else f"{held} (re-tune with 3 repeats to store the spread)"


def allowance_of(profile: Profile, *, tolerance: float) -> Allowance:
    """The tolerances for ``profile``: see ``Allowance``."""
    noise = profile.noise if isinstance(profile.noise, dict) else {}
    runs = noise.get("repeats")
    runs = runs if isinstance(runs, int) and not isinstance(runs, bool) and runs > 0 else 0
    spread = noise.get("spread")
    spread = float(spread) if isinstance(spread, (int, float)) and spread >= 0 else None
    if runs < 2:
        spread = None  # one run has no spread, whatever the profile says (0.0 before issue 17)
    benchmark = max(tolerance, spread or 0.0)
    if runs < FEW_RUNS or spread is None:
        benchmark = max(benchmark, UNKNOWN_SPREAD)
    return Allowance(tolerance=tolerance, benchmark=benchmark, runs=runs, spread=spread)


@dataclass(frozen=True)
class Verification:
    """The verdict on one profile."""

    profile: Profile
    results: tuple[TrialResult, ...]
    drifts: tuple[Drift, ...]
    allowance: Allowance

    @property
    def tolerance(self) -> float:
        """The user's ``--tolerance``."""
        return self.allowance.tolerance

    def limit(self, drift: Drift) -> float:
        """The tolerance ``drift`` is held to: startup numbers the user's, benchmark metrics
        at least the stored spread."""
        at_startup = CHECKED.get(drift.metric, (False, False, False))[0]
        return self.allowance.tolerance if at_startup else self.allowance.benchmark

    def fails(self, drift: Drift) -> bool:
        return drift.fails(self.limit(drift))

    @property
    def failure(self) -> str | None:
        """Why the profile does not hold here, or None."""
        bad = [r for r in self.results if r.outcome is not Outcome.OK]
        if bad:
            r = bad[0]
            return (
                f"the profile does not run here: {r.outcome.value}: {r.reason} (log {r.log_path})"
                f"; {ADVICE}"
            )
        over = [d for d in self.drifts if self.fails(d)]
        if over:
            worst = ", ".join(f"{d.metric} {d.change:+.1%}" for d in over)
            limit = max(self.limit(d) for d in over)
            return f"drift beyond {limit:.0%}: {worst} ({self.allowance.basis()}); {ADVICE}"
        return None

    def held(self) -> str:
        """The verdict of a profile that holds, with the tolerances it was held to."""
        a = self.allowance
        if a.benchmark <= a.tolerance:
            return f"the profile holds within {a.tolerance:.0%}"
        return (
            f"the profile holds within {a.benchmark:.0%} for throughput ({a.basis()}) and "
            f"{a.tolerance:.0%} for KV cache tokens"
        )


def workload_of(profile: Profile) -> tuple[Workload, int, Arrivals | None]:
    """The profile's workload, request count and arrival pattern (None: all at once), checked
    against what it was tuned with."""
    data = {k: v for k, v in profile.workload.items() if k not in ("signature", "arrivals")}
    workload = Workload.from_dict(data)
    workload.validate()
    pace = profile.workload.get("arrivals")
    if pace is not None and not isinstance(pace, Mapping):
        raise UserError(f"workload: arrivals must be a mapping, got {type(pace).__name__}")
    arrivals = None if pace is None else Arrivals.from_dict(pace)
    if (now := signed(workload.signature(), arrivals)) != profile.workload_signature:
        raise UserError(
            f"the workload changed since tuning ({profile.workload_signature} → "
            f"{now}): the dataset file differs"
        )
    return workload, int(workload.num_prompts or 64), arrivals


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
        allowance=allowance_of(profile, tolerance=tolerance),
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
        limit = verification.limit(d)
        verdict = (
            f"beyond tolerance ({limit:.0%})"
            if verification.fails(d)
            else (f"ok (within {limit:.0%})" if d.gated else "(not gated)")
        )
        table.add_row(
            d.metric, f"{d.stored:,.1f}", f"{d.measured:,.1f}", f"{d.change:+.1%}", verdict
        )
    return table
