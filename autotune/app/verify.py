"""The ``profiles verify`` use case: re-measure the profile ``serve`` would use with its own
workload and report the drift."""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

from autotune import paths
from autotune.app.interrupt import sigterm_as_interrupt
from autotune.app.lookup import lookup
from autotune.app.options import TuneOptions
from autotune.app.prepare import engine_env
from autotune.app.serve import announce
from autotune.errors import UserError
from autotune.profiles.match import combined_extra
from autotune.profiles.verify import (
    Verification,
    allowance_of,
    drift_table,
    measure,
    workload_of,
)

__all__ = ["verify"]
log = logging.getLogger(__name__)


def verify(
    options: TuneOptions,
    *,
    workload: str | None = None,
    profile_file: Path | None = None,
    tolerance: float = 0.1,
    repeats: int = 1,
) -> Verification:
    """Re-measure the profile ``serve`` would use with its own workload; print the drift."""
    from rich.console import Console

    from autotune.load.workload import build_requests
    from autotune.trial.runner import TrialRunner

    if repeats < 1:
        raise UserError(f"--repeats {repeats}: at least one run is needed")
    if not 0 <= tolerance < 1:
        raise UserError(f"--tolerance {tolerance}: give a fraction such as 0.1")
    where = lookup(options, workload=workload, strict=True)
    match = where.find(profile_file=profile_file)
    if match is None:
        raise UserError(where.miss())
    announce(match, hardware=where.hardware)
    profile = match.profile
    wl, num_prompts, arrivals = workload_of(profile)
    runner = TrialRunner(
        command=where.command,
        model=options.model,
        requests=build_requests(wl, num_prompts=num_prompts, vocab_size=where.spec.vocab_size),
        extra_args=tuple(combined_extra(profile, options.extra_args)),
        env=engine_env(where.hardware),
        startup_timeout_s=options.startup_timeout_s,
        arrivals=arrivals,
    )
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    log_dir = paths.state_dir(options.state_dir) / "logs" / "verify" / f"{match.path.stem}-{stamp}"
    if (note := allowance_of(profile, tolerance=tolerance).note()) is not None:
        log.warning(note)
    with sigterm_as_interrupt():
        result = measure(
            profile=profile,
            runner=runner,
            log_dir=log_dir,
            repeats=repeats,
            tolerance=tolerance,
            on_phase=lambda text: log.info(text) if not options.quiet else None,
        )
    measured_on = next((r.vllm_version for r in result.results if r.vllm_version), where.version)
    if result.drifts:
        title = f"tuned on vLLM {profile.vllm_version}, measured on vLLM {measured_on}"
        Console(width=None if Console().is_terminal else 120).print(
            drift_table(result, title=title)
        )
    return result
