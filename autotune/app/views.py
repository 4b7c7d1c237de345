"""Read-only views: the trials of studies and the saved profiles."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from autotune import paths
from autotune.engine.safety import redact_url
from autotune.errors import UserError
from autotune.hardware import Device
from autotune.masking import mask
from autotune.model import resolve_model
from autotune.profiles.match import Match
from autotune.profiles.store import ProfileStore

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
    console = Console() if Console().is_terminal else Console(width=200)
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


def print_profiles(*, profiles_dir: Path | None) -> None:
    store = ProfileStore(paths.profiles_dir(profiles_dir))
    found = store.all()
    if not found:
        print(f"no profiles in {store.root}", file=sys.stderr)
        return
    table = Table(title=Text(f"profiles in {store.root}"), title_justify="left")
    for col in ("model", "hardware", "workload", "objective", "vLLM", "tok/s", "created", "file"):
        table.add_column(col, overflow="fold")
    for path, p in found:  # a profile may come from someone else: its text is never markup
        tput = p.metrics.get("output_throughput")
        cells = (
            p.model_name,
            p.hardware_key,
            p.workload_signature,
            p.objective,
            p.vllm_version or "?",
            f"{tput:.1f}" if isinstance(tput, (int, float)) else "",
            p.created,
            str(path),
        )
        table.add_row(*(Text(str(cell)) for cell in cells))
    Console().print(table)


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
        print(yaml.safe_dump(data, sort_keys=False), end="")


def export_profile(*, fmt: str, model: str, **where: Any) -> None:
    from autotune.profiles.export import export

    match, command = _lookup(model=model, **where)
    sys.stdout.write(export(match.profile, fmt=fmt, model=model, command=command))
