"""Serve: find the profile for this model and hardware and exec ``vllm serve`` with it.

This path never imports Optuna (tuning on a miss is imported lazily by the caller).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.engine.launcher import build_argv
from autotune.hardware import Hardware
from autotune.model import ModelSpec
from autotune.profiles.layout import limits_key
from autotune.profiles.store import Profile, ProfileStore


@dataclass(frozen=True)
class Match:
    """The profile chosen for ``serve`` and why."""

    path: Path
    profile: Profile
    others: int  # other profiles that also fit (other workloads or objectives)
    how: str = "exact"  # "exact", "compatible" (another vLLM patch release) or "unversioned"


def find_profile(
    *,
    store: ProfileStore,
    spec: ModelSpec,
    hardware: Hardware,
    workload: str | None = None,
    profile_file: Path | None = None,
    vllm_version: str | None = None,
    parallel: Mapping[str, int] | None = None,
    limits: Mapping[str, Any] | None = None,
    accept: Callable[[Profile], bool] | None = None,
) -> Match | None:
    """``--profile FILE`` wins; else the newest profile for this model (same ``config.json``),
    hardware, parallel sizes the user set (and workload): tuned on this vLLM release (exact), else
    on another patch release of the same minor (compatible), else none. Without a known vLLM
    version, the version is not matched. ``limits`` (SLOs, floor, budget given to serve): only
    a profile tuned under exactly these. ``accept``: only profiles it accepts (``serve``'s
    vLLM flags, e.g. ``--max-model-len 8192``)."""
    if profile_file is not None:
        return Match(path=profile_file, profile=store.load(profile_file), others=0)
    found = [
        (path, prof)
        for path, prof in store.find(
            model_name=spec.name, hardware_key=hardware.key, workload=workload
        )
        if _same_config(prof, spec)
        and _same_parallel(prof, parallel or {})
        and (limits is None or limits_key(prof.constraints) == dict(limits))
        and (accept is None or accept(prof))
    ]
    if vllm_version is None:
        how = "unversioned"
    else:
        exact = [f for f in found if _release(f[1].vllm_version) == _release(vllm_version)]
        same_minor = [f for f in found if _minor(f[1].vllm_version) == _minor(vllm_version)]
        found, how = (exact, "exact") if exact else (same_minor, "compatible")
    if not found:
        return None
    path, profile = found[0]
    return Match(path=path, profile=profile, others=len(found) - 1, how=how)


def _same_config(profile: Profile, spec: ModelSpec) -> bool:
    """A profile tuned for another ``config.json`` (another architecture, dtype or quantization
    under the same name) does not fit; unknown hashes (hub ids not cached) are not compared."""
    theirs = profile.model.get("config_hash")
    return theirs is None or spec.config_hash is None or theirs == spec.config_hash


def _same_parallel(profile: Profile, wanted: Mapping[str, int]) -> bool:
    return all(profile.parallel.get(name, 1) == size for name, size in wanted.items())


def _describe(profile: Profile, spec: ModelSpec) -> str:
    extra = [f"vLLM {profile.vllm_version}"]
    extra += [f"{k} {v}" for k, v in profile.parallel.items() if v != 1]
    if not _same_config(profile, spec):
        extra.append(f"config {profile.model.get('config_hash')}, not {spec.config_hash}")
    return f"{profile.model_name} on {profile.hardware_key} ({profile.workload_signature}, " + (
        ", ".join(extra) + ")"
    )


def _release(version: str | None) -> str:
    """``0.32.0+cpu`` → ``0.32.0`` (local build tags do not change the release)."""
    return (version or "").split("+", 1)[0]


def _minor(version: str | None) -> str:
    return ".".join(_release(version).split(".")[:2])


def describe_miss(
    *,
    store: ProfileStore,
    spec: ModelSpec,
    hardware: Hardware,
    workload: str | None,
    vllm_version: str | None = None,
    parallel: Mapping[str, int] | None = None,
    limits: Mapping[str, Any] | None = None,
    also: Sequence[str] = (),
) -> str:
    """What was looked for (``also``: further requirements, said as given), and which
    profiles exist instead."""
    wanted = f"model {spec.name} on {hardware.key}" + (f", workload {workload}" if workload else "")
    wanted += "".join(f", {name} {limit}" for name, limit in (limits or {}).items())
    wanted += "".join(f", {name} {size}" for name, size in (parallel or {}).items())
    wanted += "".join(f", {text}" for text in also)
    if vllm_version:
        wanted += f", vLLM {_minor(vllm_version)}.x"
    if hardware.source != "nvml":
        wanted += f" ({hardware.describe()})"
    existing = [_describe(p, spec) for _, p in store.all()]
    have = "; ".join(existing[:5]) if existing else "none"
    return f"no profile for {wanted} in {store.root} (profiles there: {have})"


def serve_argv(
    *, command: Sequence[str], model: str, profile: Profile, extra: Sequence[str] = ()
) -> list[str]:
    """The exact ``vllm serve`` command line for a profile: every tuned value explicit."""
    return build_argv(
        command=command, model=model, args=profile.vllm_args, extra=combined_extra(profile, extra)
    )


def combined_extra(profile: Profile, extra: Sequence[str]) -> list[str]:
    """The profile's saved extra arguments, then the user's (which win in vLLM's parser); the
    same arguments given again (e.g. serve after tuning with them) are not doubled."""
    saved = list(profile.extra_args)
    return list(extra) if list(extra[: len(saved)]) == saved else [*saved, *extra]
