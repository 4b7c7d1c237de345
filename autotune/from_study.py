"""``autotune profiles save --from-study``: write the profile of a study that no worker
finished (workers stopped, or killed before the last one saved). Reads only the study: what
``tune`` recorded there (model, hardware, workload, goal, extra arguments) and its trials."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from autotune import __version__, paths
from autotune import study as st
from autotune.best import choose_best
from autotune.errors import UserError
from autotune.goals import Goal
from autotune.model import resolve_model
from autotune.profiles import SCHEMA_VERSION, SINGLE_DEVICE, Profile, ProfileStore
from autotune.safety import parallel_sizes, redact_url
from autotune.serve import note
from autotune.tuning import warnings_for
from autotune.workers import counts

INPUTS = "profile_inputs"  # the study attribute ``tune`` writes for this


def inputs(
    *, extra_args: list[str], num_prompts: int, objective: str, goal: Goal
) -> dict[str, Any]:
    """What ``tune`` records in the study so that its profile can be written later."""
    return {
        "extra_args": list(extra_args),
        "num_prompts": num_prompts,
        "objective": objective,
        "goal": {
            "kind": goal.kind,
            "slos": [list(s) for s in goal.slos],
            "min_throughput": goal.min_throughput,
            "memory_budget": goal.memory_budget,
            "total_gib": goal.total_gib,
        },
    }


def _goal(saved: dict[str, Any]) -> Goal:
    return Goal(
        kind=saved["kind"],
        slos=tuple((str(k), float(v)) for k, v in saved.get("slos", [])),
        min_throughput=saved.get("min_throughput"),
        memory_budget=saved.get("memory_budget"),
        total_gib=float(saved.get("total_gib") or 0.0),
    )


def save_from_study(
    *,
    model: str | None,
    storage: str | None,
    study_name: str | None,
    state_dir: Path | None,
    profiles_dir: Path | None,
    noise: float,
) -> Path:
    """Choose the study's best feasible trial and save it as a profile; the path written."""
    state = paths.state_dir(state_dir)
    url = st.storage_url(storage, state_dir=state)
    names = st.find_studies(url, model=None if model is None else resolve_model(model).name)
    name = study_name or (names[-1] if names else None)
    if name is None or name not in names:
        raise UserError(f"no study {name or ('for ' + str(model))} in {redact_url(url)}")
    study = st.load_study(name, url)
    saved = study.user_attrs.get(INPUTS)
    if saved is None:
        raise UserError(f"study {name!r} was not recorded by this autotune: run tune again")
    seen = counts(study)
    if seen.running:
        note(f"{seen.running} trial(s) still running in study {name}: saving the best so far")
    goal = _goal(saved["goal"])
    best = choose_best(study, noise=noise, goal=goal)
    if best is None:
        raise UserError(f"no feasible trial in study {name!r} ({seen.done} launches)")
    extra = list(saved["extra_args"])
    profile = Profile(
        schema_version=SCHEMA_VERSION,
        model=dict(study.user_attrs["model"]),
        hardware=dict(study.user_attrs["hardware"]),
        vllm_version=best.user_attrs.get("vllm_version"),
        workload=dict(study.user_attrs["workload"]) | {"num_prompts": saved["num_prompts"]},
        objective=saved["objective"],
        vllm_args=dict(best.user_attrs["vllm_args"]),
        extra_args=extra,
        warnings=warnings_for(extra, vllm_args=[best.user_attrs["vllm_args"]]),
        constraints=goal.describe_limits(),
        metrics=dict(best.user_attrs.get("metrics") or {}),
        startup=dict(best.user_attrs.get("startup") or {}),
        parallel=SINGLE_DEVICE | parallel_sizes(extra),
        provenance={
            "study": name,
            "storage": "default (state directory)" if storage is None else "--storage",
            "trial": best.number,
            "log": Path(str(best.user_attrs.get("log") or "")).name or None,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "autotune_version": __version__,
            "saved_by": "profiles save --from-study",
        },
    )
    path = ProfileStore(paths.profiles_dir(profiles_dir)).save(profile)
    study.set_user_attr("chosen_trial", best.number)
    note(f"best: trial {best.number} of {seen.done} launches; profile saved to {path}")
    return path
