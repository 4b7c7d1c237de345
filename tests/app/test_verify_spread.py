"""profiles verify against the profile's stored spread: a one-run profile is not held to one
number, a spread the profile's runs showed widens the throughput gate, KV cache stays strict."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from rich.console import Console

from autotune.engine.outcome import Outcome, StartupInfo
from autotune.load.metrics import Metrics
from autotune.profiles.build import Chosen, build_profile, stored_noise
from autotune.profiles.store import Profile
from autotune.profiles.verify import (
    FEW_RUNS,
    UNKNOWN_SPREAD,
    Verification,
    allowance_of,
    drift_table,
    measure,
)
from autotune.trial.runner import TrialResult, TrialRunner
from tests.profiles.test_store import make


def stored(noise: dict[str, Any] | None, *, tput: float = 1000.0, kv: int = 10_000) -> Profile:
    base = make("2026-01-01")
    return replace(
        base,
        metrics={"output_throughput": tput},
        startup={"kv_cache_tokens": kv},
        noise={} if noise is None else noise,
    )


def metrics(tput: float) -> Metrics:
    fields = {f: 1.0 for f in Metrics.__dataclass_fields__}
    ints = {"completed": 10, "failed": 0, "input_tokens": 100, "output_tokens": 50}
    return Metrics.from_dict({**fields, **ints, "max_concurrency": 4, "output_throughput": tput})


class FakeRunner:
    """Each run serves at the next of ``speeds`` (output tok/s) with ``kv`` KV cache tokens."""

    def __init__(self, speeds: list[float], *, kv: int = 10_000) -> None:
        self.speeds, self.kv, self.ran = list(speeds), kv, 0

    def run(self, *, args: Any, log_path: Path, on_phase: Any) -> TrialResult:
        tput = self.speeds[self.ran]
        self.ran += 1
        return TrialResult(
            outcome=Outcome.OK,
            reason="",
            args=dict(args),
            log_path=log_path,
            metrics=metrics(tput),
            startup=StartupInfo(kv_cache_tokens=self.kv),
        )


def verified(
    profile: Profile, speeds: list[float], *, tolerance: float = 0.1, kv: int = 10_000
) -> Verification:
    runner = cast(TrialRunner, FakeRunner(speeds, kv=kv))
    return measure(
        profile=profile,
        runner=runner,
        log_dir=Path("unused"),
        repeats=len(speeds),
        tolerance=tolerance,
        on_phase=lambda _text: None,
    )


ONE_RUN = {"repeats": 1, "output_throughput": [1000.0], "spread": 0.0, "trials": [3]}


@pytest.mark.parametrize("noise", [ONE_RUN, None, {"repeats": 1, "spread": None}])
def test_a_loaded_machine_is_not_drift_against_a_single_stored_run(
    noise: dict[str, Any] | None,
) -> None:
    result = verified(stored(noise), [760.0])  # -24%: the loaded machine
    assert result.failure is None
    assert result.allowance.benchmark == UNKNOWN_SPREAD > result.tolerance
    held = result.held()
    assert f"{UNKNOWN_SPREAD:.0%} for throughput" in held and "10% for KV cache" in held
    assert "unknown (one run)" in held or "stores no repeats" in held
    note = result.allowance.note()
    assert note is not None and "re-tune with 3 repeats" in note


def test_beyond_the_floor_it_fails_in_one_line_that_says_what_to_do() -> None:
    result = verified(stored(ONE_RUN), [500.0])
    failure = result.failure
    assert failure is not None and "\n" not in failure
    assert failure.startswith(f"drift beyond {UNKNOWN_SPREAD:.0%}: output_throughput -50.0%")
    assert "spread is unknown (one run)" in failure
    for advice in ("re-tune", "another process", "--tolerance"):
        assert advice in failure.replace("no other process", "another process")


def test_the_stored_spread_widens_the_throughput_gate_only() -> None:
    wide = {"repeats": 3, "output_throughput": [1000.0, 800.0, 1100.0], "spread": 0.3}
    result = verified(stored(wide), [780.0], kv=8_500)  # -22% throughput, -15% KV cache
    assert result.allowance.known and result.allowance.benchmark == pytest.approx(0.3)
    failure = result.failure
    assert failure is not None and "kv_cache_tokens -15.0%" in failure
    assert "output_throughput" not in failure  # inside the runs' own spread
    assert "3 runs spread 30%" in failure
    console = Console(file=io.StringIO(), width=200)
    console.print(drift_table(result, title="t"))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "ok (within 30%)" in text and "beyond tolerance (10%)" in text


def test_a_tight_spread_keeps_the_users_tolerance() -> None:
    tight = {"repeats": 3, "output_throughput": [1000.0, 990.0, 1010.0], "spread": 0.02}
    allowance = allowance_of(stored(tight), tolerance=0.1)
    assert allowance.benchmark == pytest.approx(0.1) and allowance.note() is None
    result = verified(stored(tight), [760.0])
    assert result.failure is not None and result.failure.startswith("drift beyond 10%")
    assert verified(stored(tight), [950.0]).held() == "the profile holds within 10%"


@pytest.mark.parametrize(
    ("runs", "spread", "tolerance"),
    [(1, 0.0, 0.05), (2, 0.1, 0.05), (2, 0.4, 0.05), (3, 0.05, 0.2), (5, 0.6, 0.1),
     (0, None, 0.5), (4, None, 0.1)],
)  # fmt: skip
def test_the_allowance_is_never_below_the_spread_nor_the_floor_when_unknown(
    runs: int, spread: float | None, tolerance: float
) -> None:
    noise = {"repeats": runs, "spread": spread} if runs else None
    a = allowance_of(stored(noise), tolerance=tolerance)
    assert a.benchmark >= tolerance and a.tolerance == tolerance
    if runs >= 2 and spread is not None:
        assert a.benchmark >= spread
    if runs < FEW_RUNS or spread is None:
        assert a.benchmark >= UNKNOWN_SPREAD and not a.known


def test_profiles_store_the_spread_of_their_runs_and_none_for_one() -> None:
    assert stored_noise(ONE_RUN)["spread"] is None
    three = {"repeats": 3, "output_throughput": [90.0, 100.0, 110.0], "spread": 0.2}
    assert stored_noise(three) == three
    good = make("2026-01-01")
    sections = {
        "noise": three | {"statistic": "median"},
        "variants": [{"picks": ["memory"], "trial": 1, "vllm_args": {"max_num_seqs": 8},
                      "noise": {"repeats": 1, "output_throughput": [5.0], "spread": 0.0}}],
    }  # fmt: skip
    chosen = Chosen(number=3, vllm_args={"max_num_seqs": 8}, vllm_version="0.33.0",
                    metrics={}, startup={}, log=None, study="s", num_prompts=8,
                    sections=sections)  # fmt: skip
    profile = build_profile(
        model=good.model, hardware=good.hardware, workload=good.workload,
        objective="throughput", extra_args=[], chosen=chosen, storage_given=False, state=None,
    )  # fmt: skip
    assert profile.noise["spread"] == 0.2 and profile.noise["repeats"] == 3
    assert profile.noise["output_throughput"] == [90.0, 100.0, 110.0]
    assert profile.variants[0]["noise"]["spread"] is None
    assert Profile.from_dict(profile.to_dict(), source="t").noise == profile.noise
