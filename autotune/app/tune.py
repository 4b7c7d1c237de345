"""The ``tune`` use case: one worker here, or one worker per GPU group (``--gpus``), all on one
study. Imported lazily by ``serve`` on a profile miss."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from autotune.app.interrupt import sigterm_as_interrupt
from autotune.app.options import TuneOptions
from autotune.app.worker import run_worker
from autotune.errors import UserError
from autotune.profiles.store import Profile

__all__ = ["TuneOptions", "tune"]


def tune(options: TuneOptions) -> tuple[Path, Profile] | None:
    """Run (or resume) the study and save the best feasible trial as a profile. None: another
    worker of the study finishes it (``--gpus``, or workers sharing ``--storage``)."""
    if options.gpus is None:
        return run_worker(options)
    from autotune.app import gpus

    tp, extra = gpus.tensor_parallel(options)
    with sigterm_as_interrupt():
        failed = gpus.tune_on_gpus(replace(options, extra_args=extra), tensor_parallel=tp)
    if failed:
        raise UserError(f"{failed} worker(s) failed; see their lines above")
    return None
