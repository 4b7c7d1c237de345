"""Read-only views: the trials of studies and the saved profiles."""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from rich.console import Console

from autotune import paths
from autotune.engine.safety import redact_url
from autotune.errors import UserError
from autotune.hardware import Device
from autotune.masking import mask
from autotune.model import resolve_model
from autotune.profiles.export_k8s import ExportOptions
from autotune.profiles.match import Match
from autotune.profiles.store import Profile, ProfileStore

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import optuna


def print_trials(
    *, model: str | None, storage: str | None, state_dir: Path | None, as_json: bool
) -> None:
    """Every trial of the studies (of ``model``) with outcome, key metrics and log path."""
    from autotune.report.progress import trials_table
    from autotune.search import study as st
    from autotune.search import study_keys as keys

    state = paths.state_dir(state_dir)
    if storage is None and not (state / "studies.db").exists():
        raise UserError(f"no studies yet in {state}")
    url = st.storage_url(storage, state_dir=state)
    name = None if model is None else resolve_model(model).name
    names = st.find_studies(url, model=name)
    if not names:
        raise UserError(f"no study for {model} in {url}" if model else f"no studies in {url}")
    out: dict[str, object] = {}
    console = _console()
    for study_name in names:
        study = st.load_study(study_name, url)
        rows = st.trial_rows(study.get_trials(deepcopy=False))
        chosen = study.user_attrs.get(keys.CHOSEN)  # the trial the profile was saved from
        if as_json:  # the reasons are engine text: secrets masked here too
            out[study_name] = [
                {k: mask(v) if isinstance(v, str) else v for k, v in row.to_dict().items()}
                for row in rows
            ]
        else:
            console.print(trials_table(rows, best=chosen, title=study_name))
    if as_json:
        json.dump(out, sys.stdout, indent=2, default=str)
        print()


def write_study_report(
    *,
    model: str | None,
    storage: str | None,
    study_name: str | None,
    state_dir: Path | None,
    out: Path,
    png: bool,
) -> list[Path]:
    """The HTML report (and PNGs) of ``--study NAME``, else of the study (of MODEL) with the
    latest trial."""
    from autotune.report.html import write_report
    from autotune.search import study as st

    state = paths.state_dir(state_dir)
    if storage is None and not (state / "studies.db").exists():
        raise UserError(f"no studies yet in {state}")
    url = st.storage_url(storage, state_dir=state)
    names = st.find_studies(url, model=None if model is None else resolve_model(model).name)
    if study_name is not None:
        if study_name not in names:
            have = ", ".join(names[-5:]) or "none"
            raise UserError(f"no study {study_name!r} in {redact_url(url)} (studies: {have})")
        names = [study_name]
    if not names:
        where = redact_url(url)
        raise UserError(f"no study for {model} in {where}" if model else f"no studies in {where}")
    studies = [st.load_study(name, url) for name in reversed(names)]  # newest created first

    def last_start(study: optuna.Study) -> datetime.datetime:
        starts = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start]
        return max(starts, default=datetime.datetime.min)

    newest = max(studies, key=last_start)  # the one with the latest trial
    if len(names) > 1:
        log.info(
            "%d studies match; reporting %s, the one with the latest trial (choose with --study)",
            len(names),
            newest.study_name,
        )
    return write_report(study=newest, out=out, png=png)


def _console() -> Console:
    """stdout at the terminal's width (or ``COLUMNS``); 200 columns into a file or a pipe."""
    console = Console()
    return console if console.is_terminal or "COLUMNS" in os.environ else Console(width=200)


def print_profiles(*, profiles_dir: Path | None, as_json: bool = False) -> None:
    """The saved profiles: a table that fits the terminal, or JSON (every file, its key)."""
    from autotune.report.columns import Column, FittedTable

    store = ProfileStore(paths.profiles_dir(profiles_dir))
    found = store.all()
    listed = [_listed(path, p, root=store.root) for path, p in found]
    if as_json:
        json.dump(listed, sys.stdout, indent=2, default=str)
        print()
    if not found:
        print(f"no profiles in {store.root}", file=sys.stderr)
    if as_json or not found:
        return
    columns = [
        Column(name="model", justify="left", keep=True),
        Column(name="hardware", justify="left", keep=True),
        Column(name="workload", justify="left", keep=True),
        Column(name="tok/s", keep=True),
        Column(name="objective", justify="left"),
        Column(name="vLLM", justify="left"),
        Column(name="created", justify="left"),
        Column(name="file", justify="left"),
    ]
    rows = [  # a profile may come from someone else: its text is never markup (Text cells)
        (
            item["model"],
            item["hardware"],
            item["workload"],
            f"{item['output_throughput']:.1f}" if item["output_throughput"] is not None else "",
            item["objective"],
            item["vllm_version"] or "?",
            item["created"][:16].replace("T", " "),
            item["file"],
        )
        for item in listed
    ]
    table = FittedTable(
        title=f"profiles in {store.root}",
        columns=columns,
        rows=[tuple(mask(str(cell)) for cell in row) for row in rows],
        drop=("file", "created", "vLLM", "objective"),
    )
    _console().print(table)


def _listed(path: Path, profile: Profile, *, root: Path) -> dict[str, Any]:
    tput = profile.metrics.get("output_throughput")
    try:
        file = str(path.relative_to(root))
    except ValueError:
        file = str(path)
    return {
        "model": profile.model_name,
        "hardware": profile.hardware_key,
        "workload": profile.workload_signature,
        "objective": profile.objective,
        "vllm_version": profile.vllm_version,
        "output_throughput": float(tput) if isinstance(tput, (int, float)) else None,
        "created": profile.created,
        "file": file,
        "path": str(path),
    }


def tune_summary(path: Path, profile: Profile) -> dict[str, Any]:
    """What ``tune --json`` prints at the end: the chosen trial, its throughput and arguments,
    the profile file."""
    tput = profile.metrics.get("output_throughput")
    return {
        "profile": str(path),
        "model": profile.model_name,
        "hardware": profile.hardware_key,
        "workload": profile.workload_signature,
        "objective": profile.objective,
        "vllm_version": profile.vllm_version,
        "study": profile.provenance.get("study"),
        "trial": profile.provenance.get("trial"),
        "output_throughput": float(tput) if isinstance(tput, (int, float)) else None,
        "vllm_args": profile.vllm_args,
        "extra_args": profile.extra_args,
    }


def summary_line(path: Path, profile: Profile) -> str:
    """The one line ``tune`` ends with: trial, tok/s, the tuned arguments and the profile."""
    from autotune.report.progress import short_args

    data = tune_summary(path, profile)
    tput = data["output_throughput"]
    speed = f"{tput:.1f} output tok/s" if tput is not None else "no throughput measured"
    if (line := capacity_line(profile)) is not None:
        speed = f"{line}, {speed}"
    args = short_args(profile.vllm_args)
    return f"chosen: trial {data['trial']}, {speed}, {args}; profile saved to {path}"


def print_tune_summary(result: tuple[Path, Profile] | None) -> None:
    """``tune --json``: the summary on stdout (``saved`` false when another worker saves)."""
    if result is None:
        data: dict[str, Any] = {"saved": False, "why": "another worker of the study saves it"}
    else:
        data = {"saved": True} | tune_summary(*result)
    json.dump({k: mask(v) if isinstance(v, str) else v for k, v in data.items()}, sys.stdout,
              indent=2, default=str)  # fmt: skip
    print()


def _lookup(
    *, model: str, gpu: str | None, device: str, vllm_cmd: str | None, profiles_dir: Path | None
) -> tuple[Match, list[str]]:
    """The profile ``serve`` would use (the one lookup, ``app.lookup``), and the engine command."""
    from autotune.app.lookup import lookup
    from autotune.app.options import TuneOptions

    options = TuneOptions(
        model=model,
        gpu=gpu,
        device=cast(Device, device),
        vllm_cmd=vllm_cmd,
        profiles_dir=profiles_dir,
    )
    where = lookup(options, workload=None, strict=False)
    match = where.find()
    if match is None:
        raise UserError(where.miss())
    return match, where.command


def show_profile(*, as_json: bool, **where: Any) -> None:
    match, _ = _lookup(**where)
    data = match.profile.to_dict()
    if as_json:
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        print(f"# {match.path}")
        if (line := capacity_line(match.profile)) is not None:
            print(f"# {line}")
        print(yaml.safe_dump(data, sort_keys=False), end="")


def capacity_line(profile: Profile) -> str | None:
    """``--objective capacity``: the capacity and the SLOs it holds, else None."""
    if "capacity_rps" not in profile.metrics:
        return None
    rate = profile.metrics["capacity_rps"]
    slos = ", ".join(f"{k}={v:g}" for k, v in profile.constraints.items() if "_ms" in k)
    if not isinstance(rate, (int, float)):
        return f"capacity: no request rate met {slos}"
    return f"capacity: {rate:.3g} requests/s within {slos}"


def export_profile(
    *, fmt: str, model: str, options: ExportOptions | None = None, **where: Any
) -> None:
    from autotune.profiles.export import export

    match, command = _lookup(model=model, **where)
    text = export(match.profile, fmt=fmt, model=model, command=command, options=options)
    sys.stdout.write(text)
