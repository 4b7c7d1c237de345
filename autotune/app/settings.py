"""From ``TuneOptions`` to how a tune run ends (``Finish``) and the shape of the load its trials
send (concurrency, Poisson rate, warm-up); the goal is ``TuneOptions.goal``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from autotune.app.options import TuneOptions
from autotune.errors import UserError
from autotune.load.workload import Workload, build_requests
from autotune.search.finalize import Finish
from autotune.search.goal import SLO_METRICS, Goal

WARMUP_SEED_OFFSET = 1000  # warm-up prompts differ from the measured ones (no cache hits)


def finish_for(options: TuneOptions) -> Finish:
    if options.repeats < 1 or options.finalists < 1:
        raise UserError("--repeats and --finalists must be at least 1")
    return Finish(
        repeats=options.repeats,
        finalists=options.finalists,
        statistic=options.statistic,
        soak=options.soak,
        noise=options.noise,
        most_images=options.images_max,
    )


def load_shape(
    options: TuneOptions, goal: Goal, workload: Workload, *, vocab_size: int | None
) -> dict[str, Any]:
    """``TrialRunner`` fields: concurrency or Poisson rate, warm-up requests, SLOs for goodput."""
    if options.concurrency is not None and options.concurrency < 1:
        raise UserError(f"--concurrency {options.concurrency}: at least 1")
    if options.request_rate is not None and not options.request_rate > 0:
        raise UserError(f"--request-rate {options.request_rate}: give requests per second > 0")
    warmup = []
    if options.warmup > 0:
        wl = replace(workload, seed=workload.seed + WARMUP_SEED_OFFSET)
        warmup = build_requests(wl, num_prompts=options.warmup, vocab_size=vocab_size)
    return {
        "max_concurrency": options.concurrency,
        "request_rate": options.request_rate,
        "warmup": tuple(warmup),
        "slos": {SLO_METRICS[name]: limit for name, limit in goal.slos},
    }
