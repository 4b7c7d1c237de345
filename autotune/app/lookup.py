"""Which profile ``serve`` and ``profiles verify/show/export`` use: model, engine command and
version, hardware and parallel sizes resolved as ``serve`` does. Never imports Optuna."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autotune import paths
from autotune.app.options import TuneOptions
from autotune.app.parallel import TP, Need, decide
from autotune.app.prepare import command_and_version, hardware_for
from autotune.app.serve_args import Requirement, requirements
from autotune.engine.safety import parallel_sizes
from autotune.hardware import Hardware, engine_hardware
from autotune.model import ModelSpec, resolve_model
from autotune.profiles.match import Match, describe_miss, find_profile
from autotune.profiles.store import Profile, ProfileStore, limits_key


@dataclass(frozen=True)
class ProfileLookup:
    """What ``serve``, ``profiles verify/show/export`` look for, and where."""

    store: ProfileStore
    spec: ModelSpec
    hardware: Hardware  # the GPUs one engine runs on (``under``), as tune keys its profile
    command: list[str]
    version: str | None
    workload: str | None
    parallel: dict[str, int]
    extra_args: tuple[str, ...] = ()  # the user's, with the engine's -tp when needed
    limits: dict[str, Any] | None = None  # SLOs, floor, budget given: only profiles held to them
    requires: tuple[Requirement, ...] = ()  # vLLM's flags given as options (``serve_args``)
    prefer: str | None = None  # the workload the options describe: its profile first

    def find(self, *, profile_file: Path | None = None) -> Match | None:
        """The profile to use: ``--profile FILE``, else the newest that fits, of the
        preferred workload when there is one."""
        if profile_file is None and self.workload is None and self.prefer is not None:
            preferred = self._find(workload=self.prefer, profile_file=None)
            if preferred is not None:
                return preferred
        return self._find(workload=self.workload, profile_file=profile_file)

    def _find(self, *, workload: str | None, profile_file: Path | None) -> Match | None:
        return find_profile(
            store=self.store,
            spec=self.spec,
            hardware=self.hardware,
            workload=workload,
            parallel=self.parallel,
            vllm_version=self.version,
            profile_file=profile_file,
            limits=self.limits,
            accept=self.accepts if self.requires else None,
        )

    def accepts(self, profile: Profile) -> bool:
        """The profile meets every requirement (``serve --max-model-len 8192``: at least 8192)."""
        return all(req.met(profile.vllm_args) for req in self.requires)

    def under(self, extra_args: tuple[str, ...]) -> ProfileLookup:
        """This lookup for an engine run with ``extra_args`` (``self.hardware``: the machine):
        the GPUs one engine runs on (its tensor x pipeline group, as ``tune`` keys its profile)
        and the parallel sizes those arguments set."""
        sizes = parallel_sizes(extra_args)
        return replace(
            self,
            hardware=engine_hardware(self.hardware, sizes=sizes),
            parallel=sizes,
            extra_args=extra_args,
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
            also=[req.describe() for req in self.requires],
        )


def lookup(
    options: TuneOptions, *, workload: str | None, strict: bool, prefer: str | None = None
) -> ProfileLookup:
    """Resolve model, engine command and version, hardware and the engine's tensor-parallel
    size (``app.parallel.decide``: the user's ``-tp``, else a layout the store holds a profile
    under, else what the memory model says ``tune`` needs) as ``serve`` does. vLLM's flags
    among the options (``--max-model-len 8192``) are requirements; ``prefer``: a workload
    whose profile comes first."""
    requires = requirements(options.ranges)  # a value that cannot choose: one line, first
    spec = resolve_model(options.model)
    command, version = command_and_version(options.vllm_cmd, strict=strict)
    machine = hardware_for(options.gpu, options.device, options.vllm_cmd)
    at = ProfileLookup(
        store=ProfileStore(paths.profiles_dir(options.profiles_dir)),
        spec=spec,
        hardware=machine,
        command=command,
        version=version,
        workload=workload,
        parallel=parallel_sizes(options.extra_args),
        extra_args=options.extra_args,
        limits=limits_of(options, total_gib=machine.memory_gib),
        requires=requires,
        prefer=prefer,
    )
    layout = decide(
        spec=spec,
        hardware=machine,
        extra_args=options.extra_args,
        need=Need.of(options, memory_gib=machine.memory_gib),
        stored=lambda: stored_layouts(at),
    )
    return at.under(layout.extra_args)


def stored_layouts(at: ProfileLookup) -> list[int]:
    """The tensor-parallel sizes under which the store holds a profile that ``at`` would use
    (this model and ``config.json``, the machine's GPUs, the vLLM release, workload and limits,
    as ``find_profile`` matches them), with the pipeline size the user gave."""
    tried = {prof.parallel.get(TP, 1) for _, prof in at.store.find(model_name=at.spec.name)}
    return [
        tp
        for tp in sorted(tried)
        if at.under((*at.extra_args, "--tensor-parallel-size", str(tp))).find() is not None
    ]


def limits_of(options: TuneOptions, *, total_gib: float) -> dict[str, Any] | None:
    """The limits a profile must have been tuned under (None: none given, any profile fits)."""
    if not (options.slos or options.min_throughput is not None or options.memory_budget):
        return None
    return limits_key(options.goal(total_gib=total_gib).describe_limits())
