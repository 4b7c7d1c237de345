"""Which profile ``serve`` and ``profiles verify/show/export`` use: model, engine command and
version, hardware and parallel sizes resolved as ``serve`` does. Never imports Optuna."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune import paths
from autotune.app.options import TuneOptions
from autotune.app.prepare import command_and_version, hardware_for
from autotune.engine.safety import parallel_sizes
from autotune.hardware import Hardware
from autotune.model import ModelSpec, resolve_model
from autotune.profiles.match import Match, describe_miss, find_profile
from autotune.profiles.store import ProfileStore, limits_key


@dataclass(frozen=True)
class ProfileLookup:
    """What ``serve``, ``profiles verify/show/export`` look for, and where."""

    store: ProfileStore
    spec: ModelSpec
    hardware: Hardware
    command: list[str]
    version: str | None
    workload: str | None
    parallel: dict[str, int]
    extra_args: tuple[str, ...] = ()  # the user's, with the engine's -tp when needed
    limits: dict[str, Any] | None = None  # SLOs, floor, budget given: only profiles held to them

    def find(self, *, profile_file: Path | None = None) -> Match | None:
        return find_profile(
            store=self.store,
            spec=self.spec,
            hardware=self.hardware,
            workload=self.workload,
            parallel=self.parallel,
            vllm_version=self.version,
            profile_file=profile_file,
            limits=self.limits,
        )

    def miss(self) -> str:
        return describe_miss(
            store=self.store,
            spec=self.spec,
            hardware=self.hardware,
            workload=self.workload,
            vllm_version=self.version,
            parallel=self.parallel,
            limits=self.limits,
        )


def lookup(options: TuneOptions, *, workload: str | None, strict: bool) -> ProfileLookup:
    """Resolve model, engine command and version, and hardware as ``serve`` does."""
    from autotune.app.gpus import engine_lookup

    spec = resolve_model(options.model)
    command, version = command_and_version(options.vllm_cmd, strict=strict)
    machine = hardware_for(options.gpu, options.device, options.vllm_cmd)
    hardware, extra = engine_lookup(spec=spec, hardware=machine, extra_args=options.extra_args)
    return ProfileLookup(
        store=ProfileStore(paths.profiles_dir(options.profiles_dir)),
        spec=spec,
        hardware=hardware,  # the GPUs one engine runs on, as tune keys its profile
        command=command,
        version=version,
        workload=workload,
        parallel=parallel_sizes(extra),
        extra_args=extra,
        limits=limits_of(options, total_gib=hardware.memory_gib),
    )


def limits_of(options: TuneOptions, *, total_gib: float) -> dict[str, Any] | None:
    """The limits a profile must have been tuned under (None: none given, any profile fits)."""
    if not (options.slos or options.min_throughput is not None or options.memory_budget):
        return None
    return limits_key(options.goal(total_gib=total_gib).describe_limits())
