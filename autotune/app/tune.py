"""The ``tune`` use case: one worker here, or one worker per GPU group (``--gpus``), all on one
study. Imported lazily by ``serve`` on a profile miss."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from autotune.app.interrupt import sigterm_as_interrupt
from autotune.app.options import TuneOptions
from autotune.app.parallel import for_tune
from autotune.app.worker import run_worker
from autotune.errors import UserError
from autotune.profiles.store import Profile

__all__ = ["TuneOptions", "tune"]


def tune(options: TuneOptions) -> tuple[Path, Profile] | None:
    """Run (or resume) the study and save the best feasible trial as a profile. None: another
    worker of the study finishes it (``--gpus``, or workers sharing ``--storage``). Every
    launch runs with the tensor-parallel size ``app.parallel`` decides, with or without
    ``--gpus``."""
    layout = for_tune(options)  # the GPUs one engine runs on, as serve will look it up
    options = replace(options, extra_args=layout.extra_args)
    if options.gpus is None:
        return run_worker(options)
    from autotune.app import gpus

    with sigterm_as_interrupt():
        failed = gpus.tune_on_gpus(options, tensor_parallel=layout.tensor_parallel)
    if failed:
        raise UserError(f"{failed} worker(s) failed; see their lines above")
    return None
