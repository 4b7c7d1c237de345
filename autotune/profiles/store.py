"""Profiles: the best configuration of a study, saved as YAML and reused by ``serve``.

Schema (version 1, documented in profiles/README.md), every key required:
  schema_version, model {id, name, config_hash, revision, dtype, quantization, ...},
  hardware {gpu, memory_gib, count, driver, key}, vllm_version, workload {..., signature},
  objective, vllm_args {flag_name: value}, extra_args [the user's own arguments after --],
  metrics {...}, startup {...}, provenance {study, trial, created, autotune_version},
  parallel {tensor_parallel_size, pipeline_parallel_size}, constraints {name: limit}.
Version 2 adds, each optional (version 1 files still load): memory {reserved_gib, ..., sources},
noise {repeats, spread}, soak {passed | skipped, peak, preemptions, errors}, warnings [text],
variants [{pick, vllm_args, metrics, memory, trial}] (the Pareto front).
Writes are atomic (temporary file + rename) and locked, so a reader never sees half a
profile; arguments are checked against known vLLM flags on save and on load (safety.py).
A profile may come from someone else: files are read with ``safeyaml`` (regular files, bounded,
no aliases) and every value checked by ``values``; one bad file in a shared directory is
skipped with a warning and never hides the others.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from autotune.engine.safety import check_profile_args, strip_secrets
from autotune.errors import ProfileError, UserError
from autotune.profiles.layout import limits_key as limits_key
from autotune.profiles.layout import relative_path
from autotune.profiles.safeyaml import parse, read_regular
from autotune.profiles.values import bad_char, check_key_fields, check_tree, show

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
ADDED_IN_2 = ("memory", "noise", "soak", "warnings", "variants")
VLLM_ARGS = "vllm_args"  # the tuned flags, in the profile and in each variant
PICKS = ("throughput", "memory", "balanced")
SINGLE_DEVICE = {"tensor_parallel_size": 1, "pipeline_parallel_size": 1}


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One configuration of a Pareto profile's front (``serve --pick``)."""

    picks: list[str]  # the --pick names it answers: throughput, memory, balanced
    trial: int
    vllm_args: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> Variant:
        """Validate and build; the flags are checked like the profile's own."""
        args = data.get(VLLM_ARGS) if isinstance(data, Mapping) else None
        if not isinstance(args, Mapping):
            raise ProfileError(f"{source} needs {VLLM_ARGS}")
        check_tree(data, source=source)
        check_profile_args(args, [], source=source)
        picks = data.get("picks", [])
        if not isinstance(picks, list) or not all(p in PICKS for p in picks):
            raise ProfileError(f"{source}: picks must be a list of {', '.join(PICKS)}")
        for key in ("metrics", "memory", "noise"):
            if not isinstance(data.get(key, {}), Mapping):
                raise ProfileError(f"{source}: {key} must be a mapping")
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {"picks": [], "trial": -1}
        values |= {k: v for k, v in data.items() if k in known}
        return cls(**values | {VLLM_ARGS: dict(args)})


@dataclass(frozen=True)
class Profile:
    """A measured vLLM configuration and the key it is valid for."""

    schema_version: int
    model: dict[str, Any]
    hardware: dict[str, Any]
    vllm_version: str | None
    workload: dict[str, Any]
    objective: str
    vllm_args: dict[str, Any]
    extra_args: list[str]
    metrics: dict[str, Any]
    startup: dict[str, Any]
    provenance: dict[str, Any]
    parallel: dict[str, int] = field(default_factory=lambda: dict(SINGLE_DEVICE))
    constraints: dict[str, Any] = field(default_factory=dict)  # SLOs, budgets the trial met
    memory: dict[str, Any] = field(default_factory=dict)  # reservation, peak, their sources
    noise: dict[str, Any] = field(default_factory=dict)  # repeats and their spread
    soak: dict[str, Any] = field(default_factory=dict)  # the worst-case load run, or skipped
    warnings: list[str] = field(default_factory=list)  # e.g. an fp8 KV cache changes outputs
    variants: list[dict[str, Any]] = field(default_factory=list)  # the Pareto front

    def variant(self, pick: str) -> Profile:
        """The Pareto variant for ``serve --pick`` (``throughput``: the fastest, ``memory``:
        the smallest reservation, ``balanced``); the profile itself when it has none."""
        if pick not in PICKS:
            raise UserError(f"--pick {pick}: choose one of {', '.join(PICKS)}")
        if not self.variants:
            return self
        found = [v for v in self.all_variants() if pick in v.picks]
        if not found:
            raise UserError(f"the profile has no variant picked for {pick}")
        v = found[0]
        return replace(self, vllm_args=dict(v.vllm_args), metrics=v.metrics, memory=v.memory)

    def all_variants(self) -> list[Variant]:
        """The Pareto front, typed (empty for a single-configuration profile)."""
        return [Variant.from_dict(v, source=f"variants[{i}]") for i, v in enumerate(self.variants)]

    @property
    def model_name(self) -> str:
        return str(self.model["name"])

    @property
    def hardware_key(self) -> str:
        return str(self.hardware["key"])

    @property
    def workload_signature(self) -> str:
        return str(self.workload["signature"])

    @property
    def created(self) -> str:
        return str(self.provenance.get("created", ""))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> Profile:
        """Validate and build; errors name ``source`` (the file)."""
        if not isinstance(data, Mapping):
            raise ProfileError(f"{source}: not a profile (expected a mapping)")
        check_tree(data, source=source)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data) - set(ADDED_IN_2))
        if unknown:
            raise ProfileError(f"{source}: unknown keys {', '.join(unknown)}")
        if missing:
            raise ProfileError(f"{source}: missing keys {', '.join(missing)}")
        version = data["schema_version"]
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            raise ProfileError(
                f"{source}: schema_version {show(version)} is not supported "
                f"(this autotune reads {', '.join(map(str, READABLE_VERSIONS))})"
            )
        if data["schema_version"] < 2 and (newer := [k for k in ADDED_IN_2 if k in data]):
            raise ProfileError(f"{source}: {', '.join(newer)} need schema_version 2")
        _check_added(data, source=source)
        mappings = ("model", "hardware", "workload", VLLM_ARGS, "metrics", "provenance")
        for key in (*mappings, "parallel", "constraints"):
            if not isinstance(data[key], Mapping):
                raise ProfileError(f"{source}: {key} must be a mapping")
        extra = data["extra_args"]
        if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
            raise ProfileError(f"{source}: extra_args must be a list of strings")
        check_profile_args(data[VLLM_ARGS], extra, source=source)
        for name in SINGLE_DEVICE:
            size = data["parallel"].get(name)
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ProfileError(f"{source}: parallel.{name} must be an integer >= 1")
        for key, sub in (("model", "name"), ("hardware", "key"), ("workload", "signature")):
            if sub not in data[key]:
                raise ProfileError(f"{source}: {key}.{sub} is missing")
        check_key_fields(data, source=source)
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def _check_added(data: Mapping[str, Any], *, source: str) -> None:
    """The version-2 sections: their shapes, and every variant's flags checked like the main."""
    for key in ("memory", "noise", "soak"):
        if key in data and not isinstance(data[key], Mapping):
            raise ProfileError(f"{source}: {key} must be a mapping")
    warnings = data.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise ProfileError(f"{source}: warnings must be a list of strings")
    variants = data.get("variants", [])
    if not isinstance(variants, list):
        raise ProfileError(f"{source}: variants must be a list")
    for i, v in enumerate(variants):
        Variant.from_dict(v, source=f"{source}: variants[{i}]")


class ProfileStore:
    """Profiles under ``root/<model>/<hardware>/<workload>--<objective>[--limits-<hash>]
    --vllm-<version>.yaml``: studies held to other SLOs or budgets never overwrite each other."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._warned: set[Path] = set()

    def path_for(self, profile: Profile) -> Path:
        """Always inside ``root``; distinct models, hardware and keys never share a file."""
        return self.root / relative_path(
            model_name=profile.model_name,
            hardware_key=profile.hardware_key,
            signature=profile.workload_signature,
            objective=profile.objective,
            constraints=profile.constraints,
            vllm_version=profile.vllm_version,
        )

    def save(self, profile: Profile) -> Path:
        """Write atomically and under the store's lock (concurrent tuners never interleave);
        the same key overwrites the older profile. Secret arguments are never written; the
        profile is validated as a loaded one would be."""
        profile = replace(profile, extra_args=strip_secrets(profile.extra_args))
        Profile.from_dict(profile.to_dict(), source="the profile to save")
        path = self.path_for(profile)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(profile.to_dict(), sort_keys=False, default_flow_style=False)
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._write(path, text)
        return path

    @staticmethod
    def _write(path: Path, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".yaml")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def load(path: Path) -> Profile:
        """The profile in ``path``, validated; a ``ProfileError`` naming the file if not."""
        source = str(path) if bad_char(str(path)) is None else ascii(str(path))
        return Profile.from_dict(parse(read_regular(path), source=source), source=source)

    def files(self) -> list[Path]:
        """The ``*.yaml`` files under ``root`` (symlinked folders not followed; hidden files and
        folders, such as an interrupted write's ``.tmp-*.yaml``, left out)."""
        found: list[Path] = []
        for top, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [Path(top, n) for n in names if n.endswith(".yaml") and n[0] != "."]
        return sorted(found)

    def all(self) -> list[tuple[Path, Profile]]:
        """Every valid profile in the store, newest first; a bad file is skipped with one
        warning (once per store), so it never hides the other models' profiles."""
        found: list[tuple[Path, Profile]] = []
        for path in self.files():
            try:
                found.append((path, self.load(path)))
            except UserError as exc:
                if path not in self._warned:
                    self._warned.add(path)
                    log.warning("skipping a profile that cannot be used: %s", exc)
        return sorted(found, key=lambda item: item[1].created, reverse=True)

    def find(
        self, *, model_name: str, hardware_key: str | None = None, workload: str | None = None
    ) -> list[tuple[Path, Profile]]:
        """Profiles for a model (and hardware, workload), newest first."""
        return [
            (path, prof)
            for path, prof in self.all()
            if prof.model_name == model_name
            and (hardware_key is None or prof.hardware_key == hardware_key)
            and (workload is None or prof.workload_signature == workload)
        ]
