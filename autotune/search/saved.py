"""What the profile saves of the chosen configurations (its version-2 sections): memory, noise,
soak verdicts and, for a Pareto front, its variants. Reads the finished study; launches nothing."""

from __future__ import annotations

from typing import Any

import optuna

from autotune.profiles.store import Variant
from autotune.search import ranking as choice
from autotune.search import study_keys as keys
from autotune.search.finalize import Finish
from autotune.search.goal import Goal
from autotune.search.pareto import balanced
from autotune.search.ranking import Candidate
from autotune.trial.record import TrialRecord


def soak_of(study: optuna.Study, cand: Candidate, *, enabled: bool) -> dict[str, Any]:
    """The profile's ``soak`` section."""
    if not enabled:
        return {"skipped": True, "why": "--no-soak"}
    record = (study.user_attrs.get(keys.SOAK) or {}).get(choice.args_key(cand.args), {})
    return {k: v for k, v in record.items() if k != "log"}


def memory_of(cand: Candidate, *, soak: dict[str, Any], budget: float | None) -> dict[str, Any]:
    """The profile's ``memory`` section: the reservation, the measured peak, their sources."""
    chosen = TrialRecord.of(cand.chosen)
    peak = soak.get("peak_memory_gib")
    if peak is None:
        peak = chosen.peak_memory_gib
    return {
        "reserved_gib": cand.reserved_gib,
        "reserved_source": chosen.reserved_source,
        "peak_gib": peak,
        "peak_source": "NVML" if peak is not None else "unavailable (no NVML)",
        "budget": budget,
    }


def variants(front: list[Candidate], *, study: optuna.Study, soak: bool) -> list[dict[str, Any]]:
    """The Pareto front as profile variants, with the picks each one answers."""
    fastest = max(front, key=lambda c: c.throughput)
    middle = balanced(front)
    out = []
    for c in front:
        picks = [
            name
            for name, hit in (
                ("memory", c is front[0]),
                ("throughput", c is fastest),
                ("balanced", c is middle),
            )
            if hit
        ]
        soaked = soak_of(study, c, enabled=soak)
        out.append(
            Variant(
                picks=picks,
                trial=c.trials[0].number,
                vllm_args=c.args,
                metrics=_metrics(c),
                memory=memory_of(c, soak=soaked, budget=None),
                noise=c.spread(),
            ).to_dict()
        )
    return out


def sections(
    picked: list[Candidate], *, study: optuna.Study, goal: Goal, finish: Finish
) -> tuple[Candidate, dict[str, Any]]:
    """The configuration the profile serves by default, and its version-2 sections."""
    main = balanced(picked) if goal.multi else picked[0]
    soaked = soak_of(study, main, enabled=finish.soak)
    out: dict[str, Any] = {
        "constraints": goal.describe_limits(),
        "memory": memory_of(main, soak=soaked, budget=goal.memory_budget),
        "noise": main.spread() | {"statistic": finish.statistic},
        "soak": soaked,
    }
    if goal.multi:
        out["variants"] = variants(picked, study=study, soak=finish.soak)
    return main, out


def _metrics(cand: Candidate) -> dict[str, Any]:
    record = TrialRecord.of(cand.chosen)
    return record.metrics.to_dict() | record.engine_stats if record.metrics is not None else {}
