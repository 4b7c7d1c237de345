"""``autotune profiles save --from-study``: write the profile of a study that no worker
finished (workers stopped, or killed before the last one saved). Reads only the study: what
``tune`` recorded there (model, hardware, workload, goal, extra arguments) and its trials."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from autotune import paths
from autotune.engine.safety import redact_url
from autotune.errors import UserError
from autotune.model import resolve_model
from autotune.profiles.build import Chosen, build_profile
from autotune.profiles.store import ProfileStore
from autotune.search import study as st
from autotune.search import study_keys as keys
from autotune.search.best import choose_best
from autotune.search.goal import Goal
from autotune.search.workers.coordination import counts
from autotune.trial.record import TrialRecord

log = logging.getLogger(__name__)


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
    saved = study.user_attrs.get(keys.INPUTS)
    if saved is None:
        raise UserError(f"study {name!r} was not recorded by this autotune: run tune again")
    seen = counts(study)
    if seen.running:
        log.info(f"{seen.running} trial(s) still running in study {name}: saving the best so far")
    goal = _goal(saved["goal"])
    best = choose_best(study, noise=noise, goal=goal)
    if best is None:
        raise UserError(f"no feasible trial in study {name!r} ({seen.done} launches)")
    chosen = Chosen.of(
        TrialRecord.of(best),
        number=best.number,
        study=name,
        num_prompts=saved["num_prompts"],
        sections={"constraints": goal.describe_limits()},
    )
    profile = build_profile(
        model=study.user_attrs[keys.MODEL],
        hardware=study.user_attrs[keys.HARDWARE],
        workload=study.user_attrs[keys.WORKLOAD],
        objective=saved["objective"],
        extra_args=list(saved["extra_args"]),
        chosen=chosen,
        storage_given=storage is not None,
        state=state,
        saved_by="profiles save --from-study",
    )
    path = ProfileStore(paths.profiles_dir(profiles_dir)).save(profile)
    study.set_user_attr(keys.CHOSEN, best.number)
    log.info(f"best: trial {best.number} of {seen.done} launches; profile saved to {path}")
    return path
