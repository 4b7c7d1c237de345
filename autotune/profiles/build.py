"""From a study's chosen trial to a profile: the key, the measured sections, provenance. One
builder for ``tune`` and ``profiles save --from-study``."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune import __version__
from autotune.engine.safety import parallel_sizes, split_extra
from autotune.engine.settings import warnings_for
from autotune.profiles.store import SCHEMA_VERSION, SINGLE_DEVICE, Profile, Variant
from autotune.trial.capacity import Capacity
from autotune.trial.record import TrialRecord


@dataclass(frozen=True, kw_only=True)
class Chosen:
    """The winner of a study and what it was tuned for."""

    number: int
    vllm_args: Mapping[str, Any]
    vllm_version: str | None
    metrics: Mapping[str, Any]
    startup: Mapping[str, Any]
    log: str | None
    study: str
    num_prompts: int
    # constraints, memory, noise, soak, variants (``search.saved.sections``)
    sections: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        record: TrialRecord,
        *,
        number: int,
        study: str,
        num_prompts: int,
        sections: Mapping[str, Any],
    ) -> Chosen:
        """The chosen trial ``number`` of ``study``, from its record. Its ``metrics`` are the
        benchmark's, with what vLLM's ``/metrics`` showed during it (preemptions, the peak
        KV-cache usage and requests waiting and running) when they were read."""
        measured = record.metrics.to_dict() | record.engine_stats if record.metrics else {}
        return cls(
            number=number,
            vllm_args=record.vllm_args,
            vllm_version=record.vllm_version,
            metrics=measured | capacity_metrics(record.capacity) if measured else {},
            startup=record.startup.to_dict(),
            log=record.log,
            study=study,
            num_prompts=num_prompts,
            sections=sections,
        )


def build_profile(
    *,
    model: Mapping[str, Any],
    hardware: Mapping[str, Any],
    workload: Mapping[str, Any],
    objective: str,
    extra_args: Sequence[str],
    chosen: Chosen,
    storage_given: bool,
    state: Path | None,
    saved_by: str | None = None,
    arrivals: Mapping[str, Any] | None = None,
) -> Profile:
    """The profile of ``chosen``: ``model``, ``hardware`` and ``workload`` as their ``to_dict``
    (with ``name`` and ``signature``; ``arrivals``, ``Arrivals.to_dict`` of a paced benchmark,
    goes under ``workload.arrivals``); extra arguments autotune does not keep are dropped here
    (``split_extra``). Logs are recorded relative to the state directory. The profile is
    validated as a loaded one would be (no control characters, sane lengths, known flags)."""
    kept, _dropped = split_extra(extra_args)
    sections = stored_sections(chosen.sections)
    variants = [
        Variant.from_dict(v, source=f"variants[{i}]")
        for i, v in enumerate(sections.get("variants") or [])
    ]
    provenance: dict[str, Any] = {
        "study": chosen.study,
        "storage": "--storage" if storage_given else "default (state directory)",
        "trial": chosen.number,
        "log": _relative(chosen.log, state),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "autotune_version": __version__,
    }
    if saved_by:
        provenance["saved_by"] = saved_by
    profile = Profile(
        schema_version=SCHEMA_VERSION,
        model=dict(model),
        hardware=dict(hardware),
        vllm_version=chosen.vllm_version,
        workload=dict(workload)
        | {"num_prompts": chosen.num_prompts}
        | ({"arrivals": dict(arrivals)} if arrivals else {}),
        objective=objective,
        vllm_args=dict(chosen.vllm_args),
        warnings=warnings_for(
            extra_args, vllm_args=[chosen.vllm_args, *(v.vllm_args for v in variants)]
        ),
        **sections,
        extra_args=kept,
        metrics=dict(chosen.metrics),
        startup=dict(chosen.startup),
        parallel=SINGLE_DEVICE | parallel_sizes(kept),
        provenance=provenance,
    )
    Profile.from_dict(profile.to_dict(), source=f"the profile of trial {chosen.number}")
    return profile


# What the profile keeps of each rate step of a capacity search (with rate, met, saturated).
POINT_METRICS = (
    "completed", "failed", "request_throughput", "output_throughput", "ttft_ms_p95",
    "ttft_ms_p99", "tpot_ms_p95", "tpot_ms_p99", "itl_ms_p95", "itl_ms_p99", "e2e_ms_p95",
    "e2e_ms_p99",
)  # fmt: skip


def capacity_metrics(capacity: Capacity | None) -> dict[str, Any]:
    """``--objective capacity``: ``capacity_rps`` (requests/s within every SLO; null when no
    rate met them) and ``capacity_points``, each rate step compactly; {} for other objectives.
    The profile's other metrics are the step at capacity."""
    if capacity is None:
        return {}
    points = []
    for p in capacity.points:
        values = p.metrics.to_dict()
        point: dict[str, Any] = {"rate": round(p.rate, 4), "met": p.met}
        point |= {"saturated": True} if p.saturated else {}
        point |= {k: round(float(values[k]), 3) for k in POINT_METRICS}
        points.append(point)
    rate = None if capacity.rate is None else round(capacity.rate, 4)
    return {"capacity_rps": rate, "capacity_points": points}


def stored_sections(sections: Mapping[str, Any]) -> dict[str, Any]:
    """``sections`` with every ``noise`` as stored: the throughput of each run, their number and
    spread, the spread null (unknown) for a single run rather than a misleading 0.0."""
    out = dict(sections)
    if isinstance(out.get("noise"), Mapping):
        out["noise"] = stored_noise(out["noise"])
    if isinstance(out.get("variants"), list):
        out["variants"] = [
            dict(v) | {"noise": stored_noise(v["noise"])}
            if isinstance(v, Mapping) and isinstance(v.get("noise"), Mapping)
            else v
            for v in out["variants"]
        ]
    return out


def stored_noise(noise: Mapping[str, Any]) -> dict[str, Any]:
    """One configuration's repeats: ``repeats`` counted from the runs' throughputs when they
    are there, and ``spread`` null when fewer than two runs give one."""
    out = dict(noise)
    runs = out.get("output_throughput")
    if isinstance(runs, list):
        out["repeats"] = len(runs)
    repeats = out.get("repeats")
    if not isinstance(repeats, int) or repeats < 2:
        out["spread"] = None
    return out


def _relative(log: str | None, state: Path | None) -> str | None:
    """A trial log's path inside the state directory (no machine-specific prefix in profiles)."""
    if not log:
        return None
    if state is not None:
        try:
            return str(Path(log).resolve().relative_to(state.resolve()))
        except ValueError:
            pass
    return Path(log).name
