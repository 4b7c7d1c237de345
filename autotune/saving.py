"""From the chosen trial to a saved profile: the key, the measured sections, provenance."""

from __future__ import annotations

import datetime as _dt
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune import __version__, paths
from autotune.hardware import Hardware
from autotune.model import ModelSpec
from autotune.multimodal import image_count
from autotune.prepare import TuneOptions
from autotune.profiles import SCHEMA_VERSION, SINGLE_DEVICE, Profile, ProfileStore
from autotune.safety import parallel_sizes, redact, split_extra
from autotune.serve import note
from autotune.tuning import warnings_for
from autotune.workload import Workload


@dataclass(frozen=True)
class Chosen:
    """The winner of a study and what it was tuned for."""

    number: int
    user_attrs: dict[str, Any]
    sections: dict[str, Any]  # constraints, memory, noise, soak, variants (``finalize``)
    study: str
    num_prompts: int


def save_profile(
    options: TuneOptions,
    *,
    spec: ModelSpec,
    hardware: Hardware,
    workload: Workload,
    chosen: Chosen,
    state: Path,
) -> tuple[Path, Profile]:
    """Build the profile of ``chosen`` and write it to the profile store."""
    kept, dropped = split_extra(options.extra_args)
    if dropped:
        note(f"not saved in the profile: {shlex.join(redact(dropped))} (pass it after -- to serve)")
    attrs = chosen.user_attrs
    variants = chosen.sections.get("variants") or []
    profile = Profile(
        schema_version=SCHEMA_VERSION,
        model=spec.to_dict() | {"name": spec.name},
        hardware=hardware.to_dict(),
        vllm_version=attrs.get("vllm_version"),
        workload=workload.to_dict()
        | {"signature": workload.signature(), "num_prompts": chosen.num_prompts},
        objective=options.objective,
        vllm_args=dict(attrs["vllm_args"]),
        warnings=warnings_for(
            options.extra_args,
            vllm_args=[attrs["vllm_args"], *(v["vllm_args"] for v in variants)],
        ),
        **chosen.sections,
        extra_args=kept,
        metrics=dict(attrs.get("metrics") or {}),
        startup=dict(attrs.get("startup") or {}),
        parallel=SINGLE_DEVICE | parallel_sizes(kept),
        provenance={
            "study": chosen.study,
            "storage": "default (state directory)" if options.storage is None else "--storage",
            "trial": chosen.number,
            "log": _relative(attrs.get("log"), state),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "autotune_version": __version__,
        },
    )
    path = ProfileStore(paths.profiles_dir(options.profiles_dir)).save(profile)
    if options.images_max:
        most = image_count(profile.vllm_args)
        note(
            f"largest image count that fits with usable throughput: {most} (trial {chosen.number})"
        )
    tput = float(profile.metrics.get("output_throughput") or 0.0)
    note(f"best: trial {chosen.number}, {tput:.1f} output tok/s; profile saved to {path}")
    return path, profile


def _relative(log: str | None, state: Path) -> str | None:
    """A trial log's path inside the state directory (no machine-specific prefix in profiles)."""
    if log is None:
        return None
    try:
        return str(Path(log).resolve().relative_to(state.resolve()))
    except ValueError:
        return Path(log).name
