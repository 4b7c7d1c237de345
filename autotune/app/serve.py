"""The ``serve`` use case: find the profile for this model and hardware and exec ``vllm serve``
with it; on a miss, tune first. Optuna is imported only on a miss (``autotune.app.tune``)."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

from autotune.app.hub import check_hub_model
from autotune.app.lookup import ProfileLookup, lookup
from autotune.app.options import TuneOptions
from autotune.app.prepare import engine_env
from autotune.app.serve_args import review_extra
from autotune.errors import UserError
from autotune.hardware import Hardware
from autotune.profiles.match import Match, serve_argv
from autotune.profiles.store import Profile

__all__ = ["announce", "exec_or_print", "serve"]
log = logging.getLogger(__name__)


def serve(
    options: TuneOptions,
    *,
    dry_run: bool = False,
    no_tune: bool = False,
    workload: str | None = None,
    profile_file: Path | None = None,
    pick: str | None = None,
    strict: bool = False,
    asked_workload: bool = False,
) -> None:
    """Exec vLLM with the matching profile (``pick``: one of its Pareto variants); on a miss
    tune first (unless ``no_tune``). vLLM's flags among the options choose the profile;
    after ``--`` they override it with a warning (refused when ``strict``). ``asked_workload``:
    the workload options were given, so that workload's profile comes first."""
    prefer = _asked(options) if asked_workload and workload is None else None
    where = lookup(options, workload=workload, strict=not dry_run, prefer=prefer)
    if not dry_run:
        check_hub_model(where.spec)  # before any tuning or launch
    match = where.find(profile_file=profile_file)
    if match is None:
        miss = where.miss()
        if no_tune:
            raise UserError(miss)
        if dry_run:
            raise UserError(miss + "; without --dry-run autotune would tune first")
        log.info(miss + "; tuning first")
        from autotune.app.tune import tune

        tune(replace(options, device=where.hardware.device, extra_args=where.extra_args))
        match = where.find()
        if match is None:  # pragma: no cover - tune() raises when it saves nothing
            raise UserError(miss)
    announce(match, hardware=where.hardware)
    if prefer is not None and match.profile.workload_signature != prefer:
        why = (
            "--profile chose it"
            if profile_file is not None
            else f"no profile was tuned for {prefer} on this model and hardware (tune with "
            "these options to measure it, or choose with --workload)"
        )
        log.info(f"serving workload {match.profile.workload_signature}'s profile: {why}")
    profile = match.profile if pick is None else match.profile.variant(pick)
    if pick is not None and profile.memory:
        log.info(f"--pick {pick}: reserves {profile.memory.get('reserved_gib')} GiB")
    _say_requirements(where, profile, pick=pick)
    profile = review_extra(profile, options.extra_args, strict=strict)
    argv = serve_argv(
        command=where.command, model=options.model, profile=profile, extra=options.extra_args
    )
    exec_or_print(argv, dry_run=dry_run, env=engine_env(where.hardware))


def _asked(options: TuneOptions) -> str:
    """The signature of the workload the options describe (a dataset must be readable)."""
    options.workload.validate()
    return options.signature()


def _say_requirements(where: ProfileLookup, profile: Profile, *, pick: str | None) -> None:
    """What each vLLM flag given as an option found; one line when a ``--pick`` variant does
    not meet them."""
    if pick is not None and not where.accepts(profile):
        wanted = ", ".join(req.describe() for req in where.requires)
        raise UserError(f"--pick {pick}: that variant does not meet {wanted}; choose another")
    for req in where.requires:
        value = req.value(profile.vllm_args)
        if value not in (req.low, req.high):
            log.info(f"{req.describe()} asked: the profile serves {req.name} {value}")


def announce(match: Match, *, hardware: Hardware) -> None:
    p = match.profile
    metrics = p.metrics or {}
    tput = metrics.get("output_throughput")
    measured = f", measured {tput:.1f} output tok/s" if isinstance(tput, (int, float)) else ""
    log.info(
        f"using profile {match.path} for {hardware.describe()} "
        f"(workload {p.workload_signature}, objective {p.objective}, "
        f"vLLM {p.vllm_version or 'unknown'}, tuned {p.created}{measured})"
    )
    if match.how == "compatible":
        log.warning(
            f"profile tuned with vLLM {p.vllm_version}, serving with another patch "
            "release; re-measure it when you can"
        )
    elif match.how == "unversioned":
        log.info("the vLLM version could not be learned: profiles matched without it")
    if match.others:
        log.info(
            f"{match.others} other profile(s) also fit; choose one with --workload or --profile"
        )


def exec_or_print(argv: Sequence[str], *, dry_run: bool, env: Mapping[str, str]) -> None:
    """Print the command (``--dry-run``) or replace this process with it (same PID)."""
    if dry_run:
        print(shlex.join(argv), flush=True)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    _exec(argv, env)


def _exec(argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    try:
        os.execvpe(argv[0], list(argv), dict(env))
    except OSError as exc:
        raise UserError(f"cannot run {argv[0]}: {exc.strerror}") from None
